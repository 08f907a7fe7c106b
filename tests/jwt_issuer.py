"""A minimal issuer of NATS JWTs, for tests of logins with a `.creds` file.

A NATS deployment in operator mode trusts an operator; the operator signs account
JWTs, an account signs user JWTs, and a user proves itself with its JWT plus a
signature of the server's nonce by its NKey seed (both in the `.creds` file).
A JWT is `header.claims.signature`, each part base64url without padding, the
signature ed25519 over `header.claims` by the issuer's NKey. Only what a test
needs: no signing keys, no expiry, no imports or exports. (The one Python library
for this on PyPI calls itself untested, so these few lines are written out here.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

NO_LIMIT = -1
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


@dataclass(frozen=True)
class Identity:
    """An NKey pair: the seed signs, the public key names the operator, account or user."""

    seed: bytes

    @classmethod
    def new(cls, prefix: int) -> Identity:
        return cls(nkeys.encode_seed(os.urandom(32), prefix))

    @property
    def public_key(self) -> str:
        return str(nkeys.from_seed(bytearray(self.seed)).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(bytearray(self.seed)).sign(data))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(issuer: Identity, subject: str, name: str, nats: dict[str, Any]) -> str:
    """Claims about `subject`, signed by `issuer`."""
    claims: dict[str, Any] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": issuer.public_key,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    # The id is the hash of the claims without it, as the Go library makes it.
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signed = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def operator_jwt(operator: Identity, name: str = "test-operator") -> str:
    return encode_jwt(operator, operator.public_key, name, {"type": "operator"})


def account_jwt(
    operator: Identity, account: Identity, name: str = "test-account", jetstream: bool = True
) -> str:
    limits: dict[str, Any] = {
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
        "imports": NO_LIMIT,
        "exports": NO_LIMIT,
        "wildcards": True,
        "conn": NO_LIMIT,
        "leaf": NO_LIMIT,
    }
    if jetstream:  # the services keep results and artifacts there; never the system account
        limits |= {"mem_storage": NO_LIMIT, "disk_storage": NO_LIMIT, "streams": NO_LIMIT}
        limits |= {"consumer": NO_LIMIT}
    return encode_jwt(operator, account.public_key, name, {"type": "account", "limits": limits})


def user_jwt(
    account: Identity,
    user: Identity,
    name: str = "test-user",
    publish: list[str] | None = None,
    subscribe: list[str] | None = None,
) -> str:
    """A user of `account`; `publish`/`subscribe` limit it to those subjects when given."""
    nats: dict[str, Any] = {
        "type": "user",
        "pub": {"allow": publish} if publish is not None else {},
        "sub": {"allow": subscribe} if subscribe is not None else {},
        "subs": NO_LIMIT,
        "data": NO_LIMIT,
        "payload": NO_LIMIT,
    }
    return encode_jwt(account, user.public_key, name, nats)


def creds_text(jwt: str, user: Identity) -> str:
    """A `.creds` file as `nsc` writes it: the user's JWT, then its seed."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


@dataclass(frozen=True)
class OperatorSetup:
    """One operator and one account, as a nats-server config in operator mode.

    The server also needs a system account of the operator (JetStream will not start
    without one); users are made only in `account`.
    """

    operator: Identity
    account: Identity
    system: Identity

    @classmethod
    def new(cls) -> OperatorSetup:
        return cls(
            Identity.new(nkeys.PREFIX_BYTE_OPERATOR),
            Identity.new(nkeys.PREFIX_BYTE_ACCOUNT),
            Identity.new(nkeys.PREFIX_BYTE_ACCOUNT),
        )

    def server_config(self) -> str:
        """Trust the operator; the MEMORY resolver knows both accounts from the start."""
        account = account_jwt(self.operator, self.account)
        system = account_jwt(self.operator, self.system, name="SYS", jetstream=False)
        return (
            f"operator: {operator_jwt(self.operator)}\n"
            f"system_account: {self.system.public_key}\n"
            "resolver: MEMORY\n"
            "resolver_preload: {\n"
            f"  {self.account.public_key}: {account}\n"
            f"  {self.system.public_key}: {system}\n"
            "}\n"
        )

    def write_creds(
        self, path: Path, publish: list[str] | None = None, subscribe: list[str] | None = None
    ) -> Path:
        """A new user of the account, its `.creds` file at `path`."""
        user = Identity.new(nkeys.PREFIX_BYTE_USER)
        jwt = user_jwt(self.account, user, publish=publish, subscribe=subscribe)
        path.write_text(creds_text(jwt, user))
        return path
