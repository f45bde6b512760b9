"""TLS (verified, with a client certificate), AUTH, deflate and snappy against a real nsqd."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.rig.certs import ec_ca, ec_leaf, nsqd_tls_args
from tests.rig.nsq import NsqCluster
from tests.rig.procs import free_port
from tests.rig.waiting import wait_for
from tests.rig.workers import WorkerFactory, bodies, clients, settled

NO_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 0}], indirect=True)
SECRET = "letmein"


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA with a server certificate for 127.0.0.1 and a client certificate, and an unrelated CA."""
    directory = tmp_path / "pki"
    directory.mkdir()
    ec_ca(directory, "ca")
    ec_ca(directory, "other-ca")
    ec_leaf(directory, "ca", "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    ec_leaf(directory, "ca", "client", "extendedKeyUsage=clientAuth\n")
    return directory


@NO_NSQD
def test_tls_with_verification_and_a_client_certificate(
    nsq_cluster: NsqCluster, workers: WorkerFactory, pki: Path
) -> None:
    nsqd = nsq_cluster.add_nsqd(extra_args=nsqd_tls_args(pki))
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies(*[f"secret-{i}" for i in range(20)]))
    cert, key = pki / "client.pem", pki / "client.key"

    # Signed by a CA we do not trust: never subscribes, and says why.
    untrusting = workers.start(
        nsqd, tls=True, tls_ca_file=pki / "other-ca.pem", tls_cert_file=cert, tls_key_file=key
    )
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in untrusting.log, what="the verification failure")
    assert untrusting.get("/readyz").status_code == 503
    untrusting.stop()

    worker = workers.start(
        nsqd,
        tls=True,
        tls_ca_file=pki / "ca.pem",
        compression="deflate",
        tls_cert_file=cert,
        tls_key_file=key,
    )
    wait_for(settled(nsqd, "work", "workers"))
    assert len(worker.records("done")) == 20
    (client,) = clients(nsqd, "work", "workers")
    assert (client["tls"], client["deflate"]) == (True, True)

    # Verification off: no CA needed (the client certificate still is, nsqd asks for one).
    worker.stop()
    nsqd.publish("work", [b"unverified"])
    unverified = workers.start(nsqd, tls=True, tls_verify=False, tls_cert_file=cert, tls_key_file=key)
    wait_for(lambda: unverified.records("done"))


@NO_NSQD
@pytest.mark.parametrize("compression", ["snappy", "deflate"])
def test_tls_with_each_compression_verified_and_large_frames(
    nsq_cluster: NsqCluster, workers: WorkerFactory, pki: Path, compression: str
) -> None:
    """Compression runs inside TLS (nsqd upgrades in that order); frames of MiBs cross both layers."""
    nsqd = nsq_cluster.add_nsqd(
        extra_args=[*nsqd_tls_args(pki), "--max-msg-size=4194304", "--max-body-size=16777216"]
    )
    nsqd.create_topic("work", "workers")
    sent = [(f"compressible {i} " * 50).encode() for i in range(100)] + [b"L" * (3 * 1024 * 1024)]
    nsqd.publish("work", sent, batch=20)
    worker = workers.start(
        nsqd,
        tls=True,
        tls_ca_file=pki / "ca.pem",  # verification stays on: the default
        tls_cert_file=pki / "client.pem",
        tls_key_file=pki / "client.key",
        compression=compression,
        max_msg_size=4 * 1024 * 1024,
        max_in_flight=20,
    )
    stats = wait_for(settled(nsqd, "work", "workers"), timeout=60)
    assert (stats["requeue_count"], stats["timeout_count"]) == (0, 0)
    assert sorted(r["body"].encode() for r in worker.records("done")) == sorted(sent)
    (client,) = clients(nsqd, "work", "workers")
    assert (client["tls"], client[compression]) == (True, True)
    assert "CERTIFICATE_VERIFY_FAILED" not in worker.log


@NO_NSQD
def test_tls_is_required_of_nsqd_when_asked_for(
    nsq_cluster: NsqCluster, workers: WorkerFactory, pki: Path
) -> None:
    nsqd = nsq_cluster.add_nsqd()  # no --tls-cert: nsqd cannot offer TLS
    nsqd.create_topic("work", "workers")
    worker = workers.start(nsqd, tls=True, tls_ca_file=pki / "ca.pem")
    wait_for(lambda: "nsqd offers no TLS" in worker.log)
    assert not clients(nsqd, "work", "workers")


@NO_NSQD
@pytest.mark.parametrize("compression", ["deflate", "snappy"])
def test_compression(nsq_cluster: NsqCluster, workers: WorkerFactory, compression: str) -> None:
    nsqd = nsq_cluster.add_nsqd()
    nsqd.create_topic("work", "workers")
    sent = [(f"compressible {i} " * 50).encode() for i in range(200)]
    nsqd.publish("work", sent)
    worker = workers.start(nsqd, compression=compression, max_in_flight=50)
    wait_for(settled(nsqd, "work", "workers"))
    assert sorted(r["body"].encode() for r in worker.records("done")) == sorted(sent)
    assert clients(nsqd, "work", "workers")[0][compression] is True


class _AuthHandler(BaseHTTPRequestHandler):
    """nsqd's --auth-http-address protocol: GET /auth?secret=...; JSON authorizations or an error status."""

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        if query.get("secret") != [SECRET]:
            self.send_response(403)
            self.end_headers()
            return
        body = json.dumps(
            {
                "ttl": 3600,
                "identity": "test-worker",
                "authorizations": [
                    {"topic": "work.*", "channels": [".*"], "permissions": ["subscribe", "publish"]}
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def auth_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _AuthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@NO_NSQD
def test_auth_secret_from_a_file_and_wrong_or_missing_secrets(
    nsq_cluster: NsqCluster, workers: WorkerFactory, auth_server: str, tmp_path: Path
) -> None:
    nsqd = nsq_cluster.add_nsqd(extra_args=[f"--auth-http-address={auth_server}"])
    nsqd.create_topic("work", "workers")
    nsqd.create_topic("work-dead")

    missing = workers.start(nsqd)
    wait_for(lambda: "nsqd requires AUTH" in missing.log)
    wrong = workers.start(nsqd, auth_secret="guess")
    wait_for(lambda: "E_AUTH_FAILED" in wrong.log)
    assert "guess" not in wrong.log
    missing.stop()
    wrong.stop()

    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    nsqd.publish("work", bodies({"fail": 9}))
    worker = workers.start(
        nsqd, auth_secret_file=secret_file, max_attempts=1, dead_letter_topic="work-dead", requeue_delay=0
    )
    wait_for(lambda: worker.records("give_up"))
    wait_for(settled(nsqd, "work", "workers"))
    assert SECRET not in worker.log
    assert '"auth": true' in worker.log
