"""`python -m nsq_worker module:Class ...`: the console script without an installed entry point."""

from nsq_worker.cli import main

if __name__ == "__main__":
    main()
