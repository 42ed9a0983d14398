"""The checks behind ``s2sauth doctor``: where does this process stand?

Each check returns a :class:`Finding` (OK, WARN or FAIL, a one-line summary,
details, and a one-line fix). :func:`diagnose` runs them in order, each
building on the last:

1. **identity**: the metadata server's default service account when one
   answers, else the Application Default Credentials account (a key file's
   ``client_email``, an impersonated target, or gcloud user credentials, which
   cannot mint ID tokens for an arbitrary audience);
2. **service account**: a loud warning for the Compute Engine default service
   account, which holds the project-wide Editor role by default;
3. **ID token**: whether one can be minted for the audience, and its claims
   (the token itself is never shown);
4. **keys endpoint**: whether the verification keys answer, how many, for how long;
5. **verification**: whether the minted token verifies against those keys.

Probing for a metadata server is one short call to the host s2sauth itself uses
(``GCE_METADATA_HOST``, else ``metadata.google.internal``), so the doctor vouches
only for the server the library will call.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._errors import S2SAuthError
from ._http import HTTPRequest, HTTPTransport, Transport, TransportError
from .tokens import metadata
from .tokens._tokens import IDTokenSource, safe_text
from .tokens.sources import ADCSource, MetadataServerSource, gcloud_adc_path
from .verify.keys import KeySet
from .verify.verifier import CERTS_URL_ENV, GOOGLE_CERTS_URL, Verifier

# What `s2sauth doctor` uses; the single checks are importable for tests.
__all__ = [
    "DEFAULT_AUDIENCE",
    "Finding",
    "Status",
    "diagnose",
]

#: The audience ``s2sauth doctor`` mints a token for when none is given.
DEFAULT_AUDIENCE = "https://example.invalid"

#: The Compute Engine default service account: ``PROJECT_NUMBER-compute@developer...``.
COMPUTE_DEFAULT_ACCOUNT = re.compile(r"^\d+-compute@developer\.gserviceaccount\.com$")

#: Seconds the metadata-server probe may take: enough on Google Cloud, short elsewhere.
PROBE_TIMEOUT = 1.0

# Without an override, probe the link-local address as google-auth does: no DNS
# lookup of metadata.google.internal that could stall off Google Cloud.
_ACCOUNT_PATH = "/computeMetadata/v1/instance/service-accounts/default/email"
_PROJECT_PATH = "/computeMetadata/v1/project/project-id"
_SHOWN_CLAIMS = ("iss", "aud", "azp", "email", "email_verified", "sub")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_IMPERSONATED = re.compile(r"/serviceAccounts/([^/:]+):generate")


class Status(enum.Enum):
    """How a check came out."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check.

    Attributes:
        check: what was checked, a few words.
        status: OK, WARN or FAIL.
        summary: one line saying what was found.
        details: further lines worth showing (never a token).
        fix: one line saying what to do, for WARN and FAIL.
    """

    check: str
    status: Status
    summary: str
    details: tuple[str, ...] = ()
    fix: str | None = None


@dataclass(frozen=True)
class Identity:
    """Who this process is, and where its tokens would come from.

    Attributes:
        email: the service account's email.
        origin: where the identity was found, for people to read.
        source: what mints ID tokens as this identity.
        details: extra lines for the report (project, notes).
    """

    email: str
    origin: str
    source: IDTokenSource
    details: tuple[str, ...] = field(default=())


def _metadata_host(environ: Mapping[str, str]) -> tuple[str, str]:
    """The host to probe, the very one s2sauth's own calls use, and how it was chosen."""
    host = metadata.resolve_host(environ)
    for name in ("GCE_METADATA_HOST", "GCE_METADATA_ROOT"):
        if environ.get(name):
            return host, f"set by {name}"
    if environ.get("GCE_METADATA_IP"):
        # google-auth only pings that address; its token requests, like s2sauth's, go to
        # GCE_METADATA_HOST. Probing it would vouch for a server the library never calls.
        return host, (
            "the default address; GCE_METADATA_IP alone is not used for tokens, "
            "set GCE_METADATA_HOST too"
        )
    return host, "the default address"


def _metadata_get(transport: Transport, host: str, path: str) -> tuple[str | None, str | None]:
    """The text at ``path`` (``None`` when the server has none), or why it could not be asked."""
    request = HTTPRequest(
        "GET",
        f"http://{host}{path}",
        {"Metadata-Flavor": metadata.METADATA_FLAVOR},
        timeout=PROBE_TIMEOUT,
    )
    try:
        response = transport(request)
    except TransportError as exc:
        return None, str(exc)
    if response.status != 200 or response.header("Metadata-Flavor") != metadata.METADATA_FLAVOR:
        return None, None
    return response.text.strip() or None, None


def _adc_path(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The ADC file google-auth would read (or ``None``), and how it was found."""
    path = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path:
        return path, "GOOGLE_APPLICATION_CREDENTIALS"
    path = gcloud_adc_path(environ)
    return (path, "gcloud") if os.path.isfile(path) else (None, "")


def _adc_identity(path: str, found_by: str, absent: str) -> Identity | Finding:
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        return Finding(
            "identity",
            Status.FAIL,
            f"Application Default Credentials at {path} ({found_by}) cannot be read: "
            f"{type(exc).__name__}",
            (absent,),
            fix="point GOOGLE_APPLICATION_CREDENTIALS at a readable credentials JSON file",
        )
    kind = info.get("type") if isinstance(info, dict) else None
    details: tuple[str, ...] = (absent,)
    if kind == "service_account" and isinstance(info.get("client_email"), str):
        origin = f"service-account key file {path} ({found_by})"
        details += (
            "key files are long-lived secrets: prefer impersonation "
            "(gcloud auth application-default login --impersonate-service-account SA_EMAIL)",
        )
        return Identity(info["client_email"], origin, ADCSource(path), details)
    if kind == "impersonated_service_account":
        match = _IMPERSONATED.search(str(info.get("service_account_impersonation_url", "")))
        if match:
            origin = f"impersonated through Application Default Credentials at {path}"
            return Identity(match.group(1), origin, ADCSource(path), details)
        return Finding(
            "identity",
            Status.WARN,
            f"impersonation credentials at {path} ({found_by}) name no service account in "
            "service_account_impersonation_url",
            details,
            fix="gcloud auth application-default login --impersonate-service-account SA_EMAIL",
        )
    if kind == "external_account":
        match = _IMPERSONATED.search(str(info.get("service_account_impersonation_url", "")))
        if match:
            origin = f"Workload Identity Federation config at {path} ({found_by})"
            return Identity(match.group(1), origin, ADCSource(path), details)
        return Finding(
            "identity",
            Status.WARN,
            f"Workload Identity Federation config at {path} ({found_by}) is bound to no "
            "service account, so it cannot mint ID tokens",
            details,
            fix="gcloud iam workload-identity-pools create-cred-config PROVIDER "
            "--service-account=SA_EMAIL ...",
        )
    if kind == "authorized_user":
        return Finding(
            "identity",
            Status.WARN,
            f"your own gcloud user credentials ({path}); they cannot mint ID tokens for an "
            "arbitrary audience",
            details,
            fix="gcloud auth application-default login --impersonate-service-account SA_EMAIL",
        )
    return Finding(
        "identity",
        Status.WARN,
        f"Application Default Credentials of type {kind!r} at {path}, which s2sauth cannot "
        "mint ID tokens with",
        details,
        fix="use a service-account key file, an impersonated service account, or a "
        "Workload Identity Federation config bound to one",
    )


def find_identity(
    environ: Mapping[str, str] | None = None, *, transport: Transport
) -> Identity | Finding:
    """Find which identity this process runs as: an :class:`Identity`, or a :class:`Finding`.

    The metadata server wins when it answers (as in
    :class:`~s2sauth.tokens.sources.DefaultSource`); otherwise Application Default
    Credentials are read. A :class:`Finding` comes back when no identity able to
    mint ID tokens was found, saying why.

    Args:
        environ: the environment to read; ``os.environ`` if omitted.
        transport: what performs the metadata calls (and the returned source's).
    """
    env = os.environ if environ is None else environ
    host, chosen_by = _metadata_host(env)
    try:
        MetadataServerSource(host=host, transport=transport).ping(timeout=PROBE_TIMEOUT)
    except S2SAuthError as exc:
        absent = f"tried the metadata server ({chosen_by}): {exc.message}"
    else:
        where = f"metadata server at {host}, {chosen_by}"
        email, failure = _metadata_get(transport, host, _ACCOUNT_PATH)
        if failure is not None:
            return Finding(
                "identity",
                Status.FAIL,
                f"the {where} answers, but asking it for the service account failed: {failure}",
                fix="check that the metadata server is healthy, then run the doctor again",
            )
        if email is None:
            return Finding(
                "identity",
                Status.FAIL,
                f"the {where} answers but reports no default service account",
                fix="attach a service account: gcloud run services update SERVICE "
                "--service-account SA_EMAIL",
            )
        details: tuple[str, ...] = ()
        project, _ = _metadata_get(transport, host, _PROJECT_PATH)
        if project:
            details += (f"project: {project}",)
        if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
            details += ("GOOGLE_APPLICATION_CREDENTIALS is set, but the metadata server wins",)
        return Identity(email, where, MetadataServerSource(host=host, transport=transport), details)
    path, found_by = _adc_path(env)
    if path is None:
        return Finding(
            "identity",
            Status.FAIL,
            "no identity: no metadata server answers and no Application Default Credentials",
            (absent,),
            fix="locally, run `s2sauth emulator` and export what it prints; or `gcloud auth "
            "application-default login --impersonate-service-account SA_EMAIL`",
        )
    return _adc_identity(path, found_by, absent)


def check_service_account(email: str) -> Finding:
    """Warn, loudly, when ``email`` is the Compute Engine default service account."""
    if not COMPUTE_DEFAULT_ACCOUNT.match(email):
        return Finding(
            "service account", Status.OK, "a dedicated account, not the Compute Engine default"
        )
    return Finding(
        "service account",
        Status.WARN,
        f"WARNING: {email} is the Compute Engine default service account",
        (
            "It holds the project-wide Editor role by default: whatever runs as it can change",
            "almost anything in the project, and every service sharing it looks the same to a",
            "receiver's allow-list. Give each service its own account with only what it needs.",
        ),
        fix="gcloud iam service-accounts create SERVICE-sa, then gcloud run services update "
        "SERVICE --service-account SERVICE-sa@PROJECT_ID.iam.gserviceaccount.com",
    )


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims if isinstance(claims, dict) else {}


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _when(epoch: object) -> str:
    if not isinstance(epoch, int):
        return repr(epoch)
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def mint_token(
    identity: Identity, audience: str, *, now: Callable[[], float] = time.time
) -> tuple[Finding, str | None]:
    """Mint an ID token for ``audience`` as ``identity``; the finding and the token (or ``None``).

    The finding shows the token's claims, never the token.
    """
    try:
        token = identity.source.fetch_id_token(audience).value
    except S2SAuthError as exc:
        return Finding(
            "ID token",
            Status.FAIL,
            f"cannot mint one for {audience}: {exc.message}",
            fix="check the identity above can mint ID tokens (roles/iam.serviceAccountOpenIdToken"
            "Creator when impersonating)",
        ), None
    claims = _claims(token)
    details = tuple(f"{name}: {_show(claims[name])}" for name in _SHOWN_CLAIMS if name in claims)
    details += (f"iat: {_when(claims.get('iat'))}", f"exp: {_when(claims.get('exp'))}")
    exp = claims.get("exp")
    left = f", expires in {int(exp - now()) // 60} min" if isinstance(exp, int) else ""
    if "email" not in claims:
        return Finding(
            "ID token",
            Status.WARN,
            f"minted for {audience}{left}, but it has no email claim",
            details,
            fix="an email allow-list needs tokens minted with format=full",
        ), token
    return Finding("ID token", Status.OK, f"minted for {audience}{left}", details), token


def check_keys(keyset: KeySet, *, transport: Transport) -> Finding:
    """Fetch the keys ``keyset`` uses: how many are published and usable, for how long.

    Args:
        keyset: the key set to check (and fill, for a verification afterwards).
        transport: what performs the raw fetch that reads ``Cache-Control``.
    """
    url = keyset.certs_url
    fix = f"check the URL (${CERTS_URL_ENV}, --certs-url) and that this host can reach it"
    try:
        response = transport(HTTPRequest("GET", url, timeout=5.0))
    except TransportError as exc:
        return Finding("keys endpoint", Status.FAIL, f"{url} does not answer: {exc}", fix=fix)
    if response.status != 200:
        return Finding(
            "keys endpoint",
            Status.FAIL,
            f"{url} answered HTTP {response.status}: {safe_text(response.text)}",
            fix=fix,
        )
    try:
        keyset.refresh()
    except S2SAuthError as exc:
        return Finding("keys endpoint", Status.FAIL, f"{url}: {exc.message}", fix=fix)
    usable = keyset.stats.keys  # at least one: refresh() refuses a set with none
    match = _MAX_AGE.search(response.header("Cache-Control") or "")
    if match:
        age = response.header("Age") or "0"
        max_age = max(0, int(match.group(1)) - (int(age) if age.isdigit() else 0))
        freshness = f"max-age {max_age} s"
    else:
        freshness = "no max-age, so keys are refetched every few minutes"
    summary = f"{url}: {usable} usable key(s), {freshness}"
    return Finding("keys endpoint", Status.OK, summary, (f"kid: {', '.join(keyset.kids)}",))


def _check_verifies(token: str, audience: str, keyset: KeySet) -> Finding:
    # Allow exactly the account that minted the token, by its numeric ID.
    subject = str(_claims(token).get("sub", ""))
    try:
        verifier = Verifier(audience, allowed_callers=[subject], keyset=keyset)
        caller = verifier.verify(token)
    except S2SAuthError as exc:
        return Finding(
            "verification",
            Status.FAIL,
            f"the minted token does not verify: {exc.message}",
            fix="a receiver must use the keys of the issuer that minted the token (with the "
            "emulator, export the S2SAUTH_CERTS_URL it prints)",
        )
    return Finding(
        "verification", Status.OK, f"the minted token verifies; caller {caller.email or '?'}"
    )


def diagnose(
    audience: str = DEFAULT_AUDIENCE,
    *,
    certs_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    transport: Transport | None = None,
) -> list[Finding]:
    """Run every check, in order; see the module docstring.

    Args:
        audience: the audience to mint a test token for.
        certs_url: the keys endpoint; ``S2SAUTH_CERTS_URL`` or Google's when omitted.
        environ: the environment to read; ``os.environ`` if omitted.
        transport: what performs the HTTP calls to the metadata server and the keys
            endpoint; a fresh :class:`~s2sauth._http.HTTPTransport`, closed at the end,
            if omitted.
    """
    if transport is not None:
        return _diagnose(audience, certs_url, environ, transport)
    owned = HTTPTransport()
    try:
        return _diagnose(audience, certs_url, environ, owned)
    finally:
        owned.close()


def _diagnose(
    audience: str, certs_url: str | None, environ: Mapping[str, str] | None, transport: Transport
) -> list[Finding]:
    env = os.environ if environ is None else environ
    certs_url = certs_url or env.get(CERTS_URL_ENV) or GOOGLE_CERTS_URL
    findings: list[Finding] = []
    identity = find_identity(env, transport=transport)
    token = None
    if isinstance(identity, Finding):
        findings.append(identity)
        findings.append(
            Finding("ID token", Status.FAIL, "not attempted: no identity that can mint one")
        )
    else:
        summary = f"{identity.email} ({identity.origin})"
        findings.append(Finding("identity", Status.OK, summary, identity.details))
        findings.append(check_service_account(identity.email))
        minted, token = mint_token(identity, audience)
        findings.append(minted)
    try:
        keyset = KeySet(certs_url, transport=transport)
    except S2SAuthError as exc:
        fix = f"pass --certs-url or set ${CERTS_URL_ENV} to an http(s) URL"
        findings.append(Finding("keys endpoint", Status.FAIL, exc.message, fix=fix))
        return findings
    keys = check_keys(keyset, transport=transport)
    findings.append(keys)
    if token is not None and keys.status is Status.OK:
        findings.append(_check_verifies(token, audience, keyset))
    return findings
