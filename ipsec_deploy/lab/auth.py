"""HTTP authentication of the lab's WinRM listeners: Basic, and Negotiate (NTLM) with message encryption.

Negotiate runs pyspnego's acceptor with ``NegotiateOptions.wrapping_winrm``, the
server half of what pypsrp's default ``auth="negotiate"`` does. Its context
belongs to one TCP connection, as with WinRM on Windows. Over plain HTTP the
client then wraps every body in the ``multipart/encrypted`` framing of
[MS-WSMV] 2.2.9.1, which ``pypsrp.encryption.WinRMEncryption`` handles on both
sides.

pyspnego's NTLM acceptor reads accounts from the file that the environment
variable ``NTLM_USER_FILE`` names (lines ``DOMAIN:USER:PASSWORD``). Each
listener writes its own file, mode 0600, and points the variable at it only
while one of its contexts steps, under a process-wide lock, so that listeners
with different accounts can share a process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field

import spnego
import spnego.channel_bindings
from pypsrp.encryption import WinRMEncryption
from spnego.exceptions import SpnegoError

log = logging.getLogger("ipsec_deploy.lab")

NEGOTIATE = "negotiate"
BASIC = "basic"
SUPPORTED_METHODS = (NEGOTIATE, BASIC)

NTLM_USER_FILE_VARIABLE = "NTLM_USER_FILE"
_NTLM_USER_FILE_LOCK = threading.Lock()

_AUTHORIZATION = re.compile(r"^\s*(\S+)\s*(\S*)\s*$")


class AuthenticationFailed(Exception):
    """Raised when a request's credentials are missing or wrong; the listener replies with 401."""


def split_account(name: str) -> tuple[str, str]:
    """Split ``DOMAIN\\user`` or ``user@DOMAIN`` into (domain, user); a bare name has domain ""."""
    if "\\" in name:
        domain, user = name.split("\\", 1)
        return domain, user
    if "@" in name:
        user, domain = name.split("@", 1)
        return domain, user
    return "", name


def _account_key(name: str) -> tuple[str, str]:
    domain, user = split_account(name)
    return domain.upper(), user.upper()


@dataclass
class ConnectionAuth:
    """The authentication state of one TCP connection."""

    context: spnego.ContextProxy | None = None
    user: str | None = None
    encryption: WinRMEncryption | None = None


@dataclass
class Authenticator:
    """Check the credentials of requests to one listener against its accounts."""

    accounts: dict[str, str]
    methods: tuple[str, ...] = SUPPORTED_METHODS
    channel_binding_data: bytes | None = None
    _user_file: str | None = field(default=None, init=False)
    _known: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(SUPPORTED_METHODS)
        if unknown:
            raise ValueError("unsupported authentication methods %s; use %s" % (sorted(unknown), SUPPORTED_METHODS))
        for name, password in self.accounts.items():
            # The NTLM user file is colon-separated, one account a line.
            if any(char in text for text in (name, password) for char in ":\r\n"):
                raise ValueError("account %r: user names and passwords must not contain ':' or line breaks" % name)
            self._known[_account_key(name)] = (name, password)

    def challenge_headers(self) -> list[tuple[str, str]]:
        """Return the WWW-Authenticate headers of a 401 reply, as Windows sends them."""
        headers = []
        if NEGOTIATE in self.methods:
            headers.append(("WWW-Authenticate", "Negotiate"))
        if BASIC in self.methods:
            headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        return headers

    def check_basic(self, token: str) -> str:
        """Return the user of a Basic token; raise AuthenticationFailed for a wrong password or unknown user."""
        if BASIC not in self.methods:
            raise AuthenticationFailed("Basic authentication is disabled on this listener")
        try:
            user, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise AuthenticationFailed("malformed Basic credentials") from error

        known = self._known.get(_account_key(user))
        if known is None or known[1] != password:
            raise AuthenticationFailed("wrong user name or password for %r" % user)
        return known[0]

    def step_negotiate(self, connection: ConnectionAuth, token: bytes) -> bytes | None:
        """Feed one Negotiate token to the connection's context and return the reply token.

        Raises AuthenticationFailed when the token is rejected or the
        authenticated user is not one of this listener's accounts.
        """
        if NEGOTIATE not in self.methods:
            raise AuthenticationFailed("Negotiate authentication is disabled on this listener")

        with _NTLM_USER_FILE_LOCK:
            previous = os.environ.get(NTLM_USER_FILE_VARIABLE)
            os.environ[NTLM_USER_FILE_VARIABLE] = self._ensure_user_file()
            try:
                if connection.context is None or connection.context.complete:
                    connection.context = self._new_context()
                    connection.user = None
                    connection.encryption = None
                reply = connection.context.step(token)
            except SpnegoError as error:
                connection.context = None
                raise AuthenticationFailed("Negotiate token rejected: %s" % error) from error
            finally:
                if previous is None:
                    os.environ.pop(NTLM_USER_FILE_VARIABLE, None)
                else:
                    os.environ[NTLM_USER_FILE_VARIABLE] = previous

        if connection.context.complete:
            principal = connection.context.client_principal or ""
            known = self._known.get(_account_key(principal))
            if known is None:
                connection.context = None
                raise AuthenticationFailed("user %r is not an account of this listener" % principal)
            connection.user = known[0]
            connection.encryption = WinRMEncryption(connection.context, WinRMEncryption.SPNEGO)
        return reply

    def _new_context(self) -> spnego.ContextProxy:
        bindings = None
        if self.channel_binding_data is not None:
            bindings = spnego.channel_bindings.GssChannelBindings(application_data=self.channel_binding_data)
        return spnego.server(
            service="WSMAN",
            channel_bindings=bindings,
            protocol="negotiate",
            options=spnego.NegotiateOptions.wrapping_winrm,
        )

    def _ensure_user_file(self) -> str:
        if self._user_file is None:
            handle, path = tempfile.mkstemp(prefix="ipsec-deploy-lab-ntlm-", suffix=".txt")
            os.fchmod(handle, 0o600)
            with os.fdopen(handle, "w", encoding="utf-8") as user_file:
                for name, password in self.accounts.items():
                    domain, user = split_account(name)
                    user_file.write("%s:%s:%s\n" % (domain, user, password))
            self._user_file = path
        return self._user_file

    def close(self) -> None:
        if self._user_file is not None:
            try:
                os.unlink(self._user_file)
            except FileNotFoundError:
                pass
            self._user_file = None


def parse_authorization(header: str) -> tuple[str, str]:
    """Split an Authorization header into (lower-case scheme, token)."""
    match = _AUTHORIZATION.match(header)
    if match is None:
        return "", ""
    return match.group(1).lower(), match.group(2)


def tls_server_end_point(certificate_der: bytes) -> bytes:
    """Compute the RFC 5929 tls-server-end-point channel binding of a SHA-256-signed certificate."""
    return b"tls-server-end-point:" + hashlib.sha256(certificate_der).digest()
