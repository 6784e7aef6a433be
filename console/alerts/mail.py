"""Django's SMTP backend with a deadline for the whole exchange, not for each read.

smtplib's timeout bounds one socket operation: a mail server that sends its greeting a byte every few
seconds, or a reply of endless continuation lines, holds the sending worker thread for ever. Here a
timer shuts the connection's socket down when `timeout` seconds have passed since sending began
(connection, greeting, STARTTLS, login, the message and QUIT together); the blocked read then ends and
the send fails with a TimeoutError that says so, which the alert's delivery records and retries.
"""

import smtplib
import socket
import threading

from django.core.mail.backends.smtp import EmailBackend


class DeadlineEmailBackend(EmailBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._smtp = None  # the SMTP client being used, known from its first socket on
        self._cut = False

    @property
    def connection_class(self):
        backend = self
        base = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP

        class Watched(base):
            def _get_socket(self, host, port, timeout):
                # Called while the client is still being built, before the greeting is read: the
                # timer must reach this socket, and STARTTLS later replaces self.sock, which the timer
                # reads at the moment it fires.
                self.sock = super()._get_socket(host, port, timeout)
                backend._smtp = self
                return self.sock

        return Watched

    def send_messages(self, email_messages):
        if self.timeout is None:
            return super().send_messages(email_messages)
        self._smtp, self._cut = None, False
        timer = threading.Timer(self.timeout, self._shut)
        timer.daemon = True
        timer.start()
        try:
            return super().send_messages(email_messages)
        except Exception as exc:
            if self._cut:
                raise TimeoutError(f"the mail server did not finish within {self.timeout:g} s") from exc
            raise
        finally:
            timer.cancel()

    def _shut(self) -> None:
        sock = getattr(self._smtp, "sock", None)
        if sock is None:
            return
        # Said before the shutdown: the sending thread wakes on it and reads this at once.
        self._cut = True
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: the exchange ended as the timer fired
