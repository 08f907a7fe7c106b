"""Certificates from a throwaway test CA, for nats-servers that speak only TLS."""

from __future__ import annotations

from pathlib import Path

import trustme


def issue_tls_files(directory: Path, client_name: str) -> dict[str, Path]:
    """PEM files in `directory`: `ca`, the server's `cert`/`key` (for 127.0.0.1 and
    localhost) and a client certificate `ccert`/`ckey` for `client_name`."""
    authority = trustme.CA()
    files = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key", "ccert", "ckey")}
    authority.cert_pem.write_to_path(str(files["ca"]))
    for issued, cert, key in (
        (authority.issue_cert("127.0.0.1", "localhost"), "cert", "key"),
        (authority.issue_cert(client_name), "ccert", "ckey"),
    ):
        issued.cert_chain_pems[0].write_to_path(str(files[cert]))
        issued.private_key_pem.write_to_path(str(files[key]))
    return files
