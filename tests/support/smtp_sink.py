#!/usr/bin/env python3
"""A real SMTP server on 127.0.0.1 for the tests, built on aiosmtpd.

Usage: smtp_sink.py PORT DIR [plain|starttls|tls [USER PASSWORD]]. Prints
"ready" once listening and runs until its standard input closes.
With starttls (required before anything else) or tls (from the first byte)
the server's certificate for 127.0.0.1 comes from a test CA made on the
spot (trustme), whose certificate is written to DIR/ca.pem; with USER and
PASSWORD it requires that login (AUTH, after TLS). Each accepted message is written to
DIR/<n>.eml; a recipient whose address contains "+retry" is refused once
with 451 (try again later) and that attempt is kept as DIR/<n>.refused.eml.
The client port of each accepted message's session is appended to
DIR/sessions.log, so a test can count the sessions a client used.
"""
import pathlib
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.refused = set()

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        for recipient in envelope.rcpt_tos:
            if "+retry" in recipient and recipient not in self.refused:
                self.refused.add(recipient)
                (self.dir / f"{self.count:05}.refused.eml").write_bytes(envelope.content)
                return "451 4.3.0 try again later"
        (self.dir / f"{self.count:05}.eml").write_bytes(envelope.content)
        with open(self.dir / "sessions.log", "a") as log:
            log.write(f"{session.peer[1]}\n")
        return f"250 OK queued as {self.count}"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    mode = sys.argv[3] if len(sys.argv) > 3 else "plain"
    options = {}
    if mode in ("starttls", "tls"):
        import trustme

        ca = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        ca.cert_pem.write_to_path(str(pathlib.Path(directory) / "ca.pem"))
        if mode == "tls":
            options["ssl_context"] = context
        else:
            options.update(tls_context=context, require_starttls=True)
    if len(sys.argv) > 5:
        login = (sys.argv[4].encode(), sys.argv[5].encode())

        def authenticator(server, session, envelope, mechanism, data):
            return AuthResult(success=(data.login, data.password) == login)

        # aiosmtpd counts only STARTTLS as TLS for AUTH; a session in TLS
        # from the first byte is encrypted all the same.
        options.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=mode != "tls",
        )
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port, **options)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
