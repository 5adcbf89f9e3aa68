"""Admin-port authentication: an admin token, or a client certificate with the admin role.

Every ``pretrade.v1.Admin`` call must carry one of:

* ``authorization: Bearer <admin token>`` metadata, compared in constant time
  with each configured token; the principal is ``token:<name>``;
* a client certificate, verified against the admin port's client CA (mutual
  TLS), whose subject has ``OU=pretrade-admin``; the principal is
  ``cert:<common name>``.

Health checking and reflection on the admin port stay open (load balancers
probe them). The principal is bound to the log context of the call, so every
``admin.action`` line names it next to the actor the request states. The guard
also decodes each request itself, after authentication, so bytes that are not
a request get INVALID_ARGUMENT rather than grpc's UNKNOWN.
"""

from __future__ import annotations

import contextvars
import hmac
import os
import pathlib
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import structlog
from grpc import aio

from gateway.auth import AUTHORIZATION_KEY
from gateway.reasons import FieldViolation, invalid
from gateway.refusals import to_grpc_status

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler

log = structlog.get_logger("gateway.admin_auth")

ADMIN_SERVICE_PREFIX = "/pretrade.v1.Admin/"
#: The organisational unit (OU) in a client certificate's subject that grants admin.
ADMIN_ROLE_OU = "pretrade-admin"
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 512

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
Decode = Callable[[bytes], Any]

_principal: contextvars.ContextVar[str] = contextvars.ContextVar("admin_principal", default="")


def current_principal() -> str:
    """Who the running admin call authenticated as (``token:ops``, ``cert:alice``), or ""."""
    return _principal.get()


class AdminAuthError(ValueError):
    """The admin credentials are unusable (unreadable file, too short a token...)."""


@dataclass(frozen=True, slots=True)
class AdminCredentials:
    #: Token by credential name.
    tokens: Mapping[str, str] = field(default_factory=dict)
    #: Accept verified client certificates whose subject carries ``OU=<cert_role>``; None: never.
    cert_role: str | None = ADMIN_ROLE_OU


class AdminGuard(aio.ServerInterceptor):  # type: ignore[type-arg]
    """Guards the Admin service's methods; other services on the server pass untouched.

    ``credentials=None`` admits everyone (authentication off) and only decodes strictly.
    """

    def __init__(self, credentials: AdminCredentials | None) -> None:
        self._open = credentials is None
        credentials = credentials or AdminCredentials({}, None)
        self._tokens = tuple(
            (name, token.encode()) for name, token in sorted(credentials.tokens.items())
        )
        self._cert_role = credentials.cert_role
        self._wrapped: dict[int, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(ADMIN_SERVICE_PREFIX):
            return handler
        cached = self._wrapped.get(id(handler))
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler.unary_unary is not None:
            wrapped: Handler = grpc.unary_unary_rpc_method_handler(
                self._guard(handler.unary_unary, handler.request_deserializer),  # type: ignore[arg-type]
                request_deserializer=None,  # bytes: decoded once the caller is known
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._guard_stream(handler.unary_stream, handler.request_deserializer),  # type: ignore[arg-type]
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        else:  # no client-streaming Admin RPC exists; refuse rather than pass one unguarded
            wrapped = grpc.unary_unary_rpc_method_handler(_refuse_streaming)
        self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    async def _admit(
        self, raw: bytes, context: aio.ServicerContext[Any, Any], decode: Decode | None
    ) -> tuple[str, Any]:
        """The caller's principal and the decoded request, or abort the call."""
        principal = "" if self._open else await self._identify(context)
        try:
            return principal, (decode(raw) if decode is not None else raw)
        except Exception:  # whatever the deserialiser raises on bad bytes
            status = to_grpc_status(
                invalid(FieldViolation("request", "not a valid protobuf message"))
            )
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise AssertionError("unreachable") from None  # pragma: no cover

    def _guard_stream(
        self, behavior: Callable[..., AsyncIterator[Any]], decode: Decode | None
    ) -> Callable[..., AsyncIterator[Any]]:
        async def guarded(raw: bytes, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            principal, request = await self._admit(raw, context, decode)
            if principal:
                # Each call runs in a task of its own: nothing to reset for other calls.
                _principal.set(principal)
                structlog.contextvars.bind_contextvars(principal=principal)
            async for item in behavior(request, context):
                yield item

        return guarded

    def _guard(self, behavior: Behavior, decode: Decode | None) -> Behavior:
        async def guarded(raw: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
            principal, request = await self._admit(raw, context, decode)
            if not principal:
                return await behavior(request, context)
            reset = _principal.set(principal)
            try:
                with structlog.contextvars.bound_contextvars(principal=principal):
                    return await behavior(request, context)
            finally:
                _principal.reset(reset)

        return guarded

    async def _identify(self, context: aio.ServicerContext[Any, Any]) -> str:
        """The caller's principal, or abort the call."""
        certified = self._certificate_principal(context)
        if certified is not None:
            return certified
        supplied = [v for k, v in context.invocation_metadata() or () if k == AUTHORIZATION_KEY]
        if supplied:
            name = self._token_name(supplied)
            if name is not None:
                return f"token:{name}"
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid admin credential")
        common_name = _auth_value(context, "x509_common_name")
        if common_name:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client certificate {common_name!r} does not carry the admin role "
                f"(OU={self._cert_role})",
            )
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "admin credential required: authorization: Bearer <admin token> metadata"
            + (f", or a client certificate with OU={self._cert_role}" if self._cert_role else ""),
        )
        raise AssertionError("unreachable")  # pragma: no cover

    def _certificate_principal(self, context: aio.ServicerContext[Any, Any]) -> str | None:
        if self._cert_role is None:
            return None
        subject = _auth_value(context, "x509_subject")
        if not subject or self._cert_role not in subject_values(subject, "OU"):
            return None
        return f"cert:{_auth_value(context, 'x509_common_name')}"

    def _token_name(self, supplied: list[str | bytes]) -> str | None:
        if len(supplied) != 1 or not isinstance(supplied[0], str):
            return None
        value = supplied[0]
        if value[:7].lower() != "bearer " or len(value) > MAX_TOKEN_LENGTH + 7:
            return None
        offered = value[7:].strip().encode()
        match = None
        for name, token in self._tokens:  # no early exit: every token is compared
            if hmac.compare_digest(offered, token) and match is None:
                match = name
        return match


async def _refuse_streaming(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not served on the admin port")


def _auth_value(context: aio.ServicerContext[Any, Any], name: str) -> str:
    values = list(context.auth_context().get(name) or ())
    return values[0].decode("utf-8", "replace") if values else ""


def subject_values(subject: str, attribute: str) -> list[str]:
    """The values of ``attribute`` in an RFC 4514 subject (``OU=a,CN=b``), escapes undone.

    Parsed, not searched: a common name such as ``x,OU=pretrade-admin`` is
    escaped in the subject (``CN=x\\,OU=pretrade-admin``) and does not count.
    """
    values: list[str] = []
    for part in _split_unescaped(subject):
        name, eq, value = part.partition("=")
        if eq and name.strip().upper() == attribute.upper():
            values.append(_unescape(value))
    return values


def _split_unescaped(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if char in ",+":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            pair = value[index + 1 : index + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out.append(chr(int(pair, 16)))
                index += 3
                continue
            out.append(value[index + 1])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


# -- tokens on disk ---------------------------------------------------------------


def check_token(token: str, where: str) -> str:
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH or len(token) > MAX_TOKEN_LENGTH:
        raise AdminAuthError(
            f"{where}: an admin token must be {MIN_TOKEN_LENGTH}-{MAX_TOKEN_LENGTH} characters"
        )
    if not token.isascii() or not token.isprintable() or " " in token:
        raise AdminAuthError(f"{where}: an admin token must be printable ASCII without spaces")
    return token


def read_token_file(path: pathlib.Path) -> dict[str, str]:
    """Tokens from a file: one per line, ``TOKEN`` or ``NAME TOKEN``; ``#`` starts a comment."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AdminAuthError(f"cannot read admin token file {path}: {exc.strerror}") from exc
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, token = line.rpartition(" ")
        name = name.strip() or (path.name if not tokens else f"{path.name}:{number}")
        tokens[name] = check_token(token, f"{path}:{number}")
    if not tokens:
        raise AdminAuthError(f"admin token file {path} holds no token")
    return tokens


def create_token_file(path: pathlib.Path) -> None:
    """Write a fresh random token readable by this user only (the directory too)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")


def first_token(path: pathlib.Path) -> str | None:
    """The first token of a token file, for the CLI; None when there is no usable file."""
    try:
        return next(iter(read_token_file(path).values()))
    except AdminAuthError:
        return None


def admin_credentials(
    token: str | None, token_file: pathlib.Path, client_ca: pathlib.Path | None
) -> AdminCredentials:
    """The admin credentials ``serve`` accepts.

    ``token`` (``--admin-token``) alone if given; else the tokens in
    ``token_file``; with neither, and no client CA to admit certificates, a
    token is generated into ``token_file`` (0600), where the CLI on the same
    machine finds it. The token itself is never logged.
    """
    cert_role = ADMIN_ROLE_OU if client_ca is not None else None
    if token:
        return AdminCredentials({"admin-token": check_token(token, "--admin-token")}, cert_role)
    if not token_file.exists() and cert_role is None:
        create_token_file(token_file)
        log.warning("admin.token_created", path=str(token_file))
    if token_file.exists():
        tokens = read_token_file(token_file)
        mode = token_file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "admin.token_file_readable_by_others", path=str(token_file), mode=oct(mode & 0o777)
            )
        log.info("admin.token_file", path=str(token_file), tokens=sorted(tokens))
        return AdminCredentials(tokens, cert_role)
    return AdminCredentials({}, cert_role)
