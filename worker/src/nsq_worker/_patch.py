"""Monkey-patch the interpreter for gevent, once, before the worker's other imports.

gnsq_mp patched on import so that handlers' blocking libraries (HTTP, databases) yield instead of
stopping every other message; importing the worker keeps that promise. The pure modules of this
package never import this one.
"""

from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()
