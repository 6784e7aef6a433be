"""Alert emails through a real SMTP server, and within their timeout from one that trickles."""

import datetime
import email
import ipaddress
import signal
import socket
import ssl
import threading
import time
from contextlib import contextmanager

import pytest
from aiosmtpd.controller import Controller

from console.alerts.models import AlertChannel, AlertDelivery
from console.alerts.notify import FAILED_OPERATION, attempt, notify
from tests.conftest import free_port
from tests.factories import process_instance

BACKEND = "console.alerts.mail.DeadlineEmailBackend"


@pytest.fixture
def instance(db):
    return process_instance("mail-a", command=["true"])


class Inbox:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def mail_server(settings):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT = BACKEND, "127.0.0.1", controller.port
    yield inbox
    controller.stop()


def test_an_email_channel_reaches_a_real_mail_server(instance, mail_server):
    AlertChannel.objects.create(name="oncall", kind="email", emails="sre@example.com, lead@example.com")
    (delivery,) = notify(FAILED_OPERATION, instance, "Restart of mail-a failed", "ready: not ready within 300 s")
    assert attempt(delivery), delivery.last_error
    assert delivery.state == "sent"
    (envelope,) = mail_server.envelopes
    assert envelope.rcpt_tos == ["sre@example.com", "lead@example.com"]
    message = email.message_from_bytes(envelope.content)
    assert message["Subject"] == "[Instance Console] Restart of mail-a failed"
    assert message.get_payload().strip() == "ready: not ready within 300 s"


def _certificate(directory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, which the client is told to trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@contextmanager
def trickling_server(port: int, after_starttls: tuple[str, str] | None):
    """A mail server that answers with endless continuation lines, a byte every 0.2 s (each read of the
    client's comes well within smtplib's timeout): from its greeting, or after STARTTLS."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", port))

    def trickle(conn) -> None:
        while not stop.is_set():
            for byte in b"250-still here\r\n":
                conn.sendall(bytes([byte]))
                time.sleep(0.2)

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            if after_starttls:
                reader = conn.makefile("rb")
                conn.sendall(b"220 ready\r\n")
                reader.readline()  # EHLO
                conn.sendall(b"250-127.0.0.1\r\n250 STARTTLS\r\n")
                reader.readline()  # STARTTLS
                conn.sendall(b"220 go ahead\r\n")
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*after_starttls)
                conn = context.wrap_socket(conn, server_side=True)
                conn.makefile("rb").readline()  # EHLO again, now over TLS
            trickle(conn)
        except OSError:
            pass  # the client hung up: what the deadline is for
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


@pytest.mark.parametrize("phase", ["greeting", "after STARTTLS"])
def test_a_mail_server_trickling_its_replies_fails_the_attempt_within_its_timeout(
    instance, settings, tmp_path, monkeypatch, phase
):
    """Before, smtplib's timeout bounded each read only: the delivery held its worker thread for ever.
    (On this thread, which holds the test's database transaction; an alarm ends it if it hangs.)"""
    port = free_port()
    settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT = BACKEND, "127.0.0.1", port
    settings.EMAIL_TIMEOUT = 2
    tls = None
    if phase == "after STARTTLS":
        tls = _certificate(tmp_path)
        settings.EMAIL_USE_TLS = True
        monkeypatch.setenv("SSL_CERT_FILE", tls[0])  # the default context trusts it

    def hung(*_):
        raise AssertionError("the attempt had not ended after 30 s")

    channel = AlertChannel.objects.create(name="slow", kind="email", emails="sre@example.com")
    delivery = AlertDelivery.objects.create(
        channel=channel, event=FAILED_OPERATION, instance_name="mail-a", title="t", text="x"
    )
    with trickling_server(port, tls):
        before = signal.signal(signal.SIGALRM, hung)
        signal.alarm(30)
        started = time.monotonic()
        try:
            assert not attempt(delivery)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, before)
        took = time.monotonic() - started
    assert delivery.last_error == "the mail server did not finish within 2 s"
    assert delivery.state == "pending" and delivery.attempts == 1
    assert took < 10  # the deadline, with room for a slow machine; never the alarm's 30 s
