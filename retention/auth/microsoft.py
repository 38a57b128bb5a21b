"""Microsoft 365 / Exchange Online tokens through MSAL, and Graph's mailbox usage report.

* App-only (``flow: app``): ``ConfidentialClientApplication.acquire_token_for_client`` with
  the scope ``https://outlook.office365.com/.default`` (Microsoft: "You must use" it for
  IMAP/POP), a client secret or a certificate (``private_key`` + SHA-1 ``thumbprint``, MSAL
  signs a client assertion). One token serves every mailbox the app was granted
  (``Add-MailboxPermission``); the SASL ``user=`` is the mailbox.
* Delegated (``flow: device``): ``retention login ACCOUNT`` runs the device-code flow once
  (prints Microsoft's message with the code) and stores the refresh token in ``state_dir``;
  runs then redeem it (``acquire_token_by_refresh_token``) and store the rotated one.
* Graph ``GET /v1.0/reports/getMailboxUsageDetail(period='D7')`` (``Reports.Read.All``):
  a 302 to a short-lived CSV with every mailbox of the tenant; its ``Prohibit
  Send/Receive Quota (Byte)`` is the limit Exchange enforces. Fetched once and kept for an
  hour (the report itself lags a day or two); the download link is fetched without the
  bearer token (it is pre-signed and on another host).

MSAL is an optional dependency (``pip install 'mailbox-retention[oauth]'``); without it these
credentials fail with a message that says so. MSAL's own in-memory cache also reuses
tokens; a forced refresh removes the refused token from it first.
"""

from __future__ import annotations

import csv
import io
import json
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from retention.auth.oauth2 import RefreshStore
from retention.auth.tokens import AccessToken, Clock, expiry, utcnow
from retention.errors import TokenError

EXO_APP_SCOPE = "https://outlook.office365.com/.default"
EXO_USER_SCOPES = (
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/POP.AccessAsUser.All",
)
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
EXTRA = "pip install 'mailbox-retention[oauth]'"
USAGE_TTL = timedelta(hours=1)


def msal_module(what: str) -> Any:
    try:
        import msal
    except ImportError:
        raise TokenError(f"{what}: type microsoft365 needs MSAL, which is not installed "
                         f"({EXTRA})", "missing_dependency") from None
    return msal


def certificate_credential(certificate: Path, key: Path | None) -> dict[str, str]:
    """MSAL's certificate credential from PEM files (thumbprint = SHA-1 of the DER cert)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    pem = certificate.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    private = (key or certificate).read_text(encoding="utf-8")
    return {"private_key": private, "thumbprint": cert.fingerprint(hashes.SHA1()).hex(),  # noqa: S303
            "public_certificate": pem.decode("ascii")}


@dataclass
class MicrosoftSource:
    """A ``TokenSource`` for one ``type: microsoft365`` credential."""

    name: str
    tenant: str
    client_id: str
    client_credential: str | dict[str, str] | None = field(default=None, repr=False)
    flow: str = "app"  # app | device
    scopes: tuple[str, ...] = ()
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    store: RefreshStore | None = None
    ca_file: Path | None = None
    timeout: float = 30.0
    clock: Clock = utcnow
    _app: Any = field(default=None, repr=False)
    _usage: tuple[Any, dict[str, tuple[int, int | None]]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def shared(self) -> bool:
        return self.flow == "app"

    @property
    def what(self) -> str:
        return f"credential {self.name}"

    def effective_scopes(self) -> list[str]:
        if self.scopes:
            return list(self.scopes)
        return [EXO_APP_SCOPE] if self.flow == "app" else list(EXO_USER_SCOPES)

    def app(self) -> Any:
        if self._app is None:
            msal = msal_module(self.what)
            from retention.auth.http import PinnedSession

            common: dict[str, Any] = {
                "authority": f"{self.authority_host.rstrip('/')}/{self.tenant}",
                "http_client": PinnedSession(self.ca_file, self.timeout),
                # No look-up at login.microsoftonline.com for the authority: the configured
                # host is trusted as given (sovereign clouds, a test stand-in).
                "instance_discovery": False,
            }
            try:
                if self.flow == "app":
                    self._app = msal.ConfidentialClientApplication(
                        self.client_id, client_credential=self.client_credential, **common)
                else:
                    self._app = msal.PublicClientApplication(self.client_id, **common)
            except ValueError as exc:
                raise TokenError(f"{self.what}: MSAL refused the configuration: {exc}",
                                 "config") from None
            except Exception as exc:  # noqa: BLE001 - requests' errors during discovery
                raise TokenError(f"{self.what}: cannot reach the authority "
                                 f"{common['authority']}: {type(exc).__name__}",
                                 "unreachable") from None
        return self._app

    def _result(self, result: Any) -> AccessToken:
        if not isinstance(result, dict):
            raise TokenError(f"{self.what}: MSAL returned no token", "no_token")
        if "access_token" not in result:
            code = str(result.get("error") or "no_token")[:80]
            desc = str(result.get("error_description") or "").splitlines()
            detail = f": {desc[0][:200]}" if desc else ""
            raise TokenError(f"{self.what}: Microsoft identity platform answered {code}{detail}",
                             code)
        rotated = result.get("refresh_token")
        if rotated and self.store is not None and self.flow != "app":
            self.store.save(self.name, str(rotated))
        return AccessToken(str(result["access_token"]), expiry(self.clock(),
                                                              result.get("expires_in")))

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except TokenError:
            raise
        except Exception as exc:  # noqa: BLE001 - requests' connection errors
            raise TokenError(f"{self.what}: token request failed: {type(exc).__name__}",
                             "unreachable") from None

    def fetch(self, subject: str) -> AccessToken:
        with self._lock:
            app = self.app()
            if self.flow == "app":
                # Our cache asked: whatever MSAL cached is stale or was refused.
                cache = app.token_cache
                for at in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
                    cache.remove_at(at)
                return self._result(self._call(app.acquire_token_for_client,
                                               scopes=self.effective_scopes()))
            refresh = self.store.load(self.name) if self.store is not None else None
            if not refresh:
                raise TokenError(f"{self.what}: no refresh token stored yet; run "
                                 "`retention login ACCOUNT` once", "login_required")
            return self._result(self._call(app.acquire_token_by_refresh_token, refresh,
                                           scopes=self.effective_scopes()))

    def device_login(self, out: Any) -> str:
        """The device-code flow: print the instructions, wait, store the refresh token."""
        app = self.app()
        flow = self._call(app.initiate_device_flow, scopes=self.effective_scopes())
        if "user_code" not in flow:
            raise TokenError(f"{self.what}: device flow refused: {flow.get('error', '?')}",
                             str(flow.get("error", "device_flow")))
        print(flow["message"], file=out, flush=True)
        result = self._call(app.acquire_token_by_device_flow, flow)
        if "refresh_token" not in result:
            self._result(result)  # raises with the error code
            raise TokenError(f"{self.what}: no refresh token returned (is offline_access "
                             "allowed?)", "no_refresh_token")
        if self.store is not None:
            self.store.save(self.name, str(result["refresh_token"]))
        return str(result.get("id_token_claims", {}).get("preferred_username", ""))

    # -- Graph mailbox usage ----------------------------------------------------------

    def mailbox_usage(self, mailbox: str) -> tuple[int, int | None] | None:
        """(storage used, prohibit send/receive quota) of ``mailbox`` from Graph, or None."""
        with self._lock:
            now = self.clock()
            if self._usage is None or now - self._usage[0] > USAGE_TTL:
                self._usage = (now, self._fetch_usage())
            return self._usage[1].get(mailbox.lower())

    def _fetch_usage(self) -> dict[str, tuple[int, int | None]]:
        app = self.app()
        result = self._call(app.acquire_token_for_client, scopes=[GRAPH_SCOPE])
        token = self._result(result).value
        url = f"{self.graph_url.rstrip('/')}/v1.0/reports/getMailboxUsageDetail(period='D7')"
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a: Any, **k: Any) -> None:
                return None  # followed below, without the Authorization header

        opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ctx))
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
        location = None
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code not in (301, 302, 303, 307) or not exc.headers.get("Location"):
                code = f"http_{exc.code}"
                with_doc = exc.read(65536)
                try:
                    code = str(json.loads(with_doc)["error"]["code"])[:80]
                except (ValueError, KeyError, TypeError):
                    pass
                raise TokenError(f"{self.what}: Graph mailbox usage report refused: {code} "
                                 f"(HTTP {exc.code}; needs Reports.Read.All)", code) from None
            location = exc.headers["Location"]
        except OSError as exc:
            raise TokenError(f"{self.what}: Graph unreachable: {exc}", "unreachable") from None
        if location is not None:
            try:
                with urllib.request.urlopen(location, timeout=self.timeout,  # noqa: S310
                                            context=ctx) as resp:
                    body = resp.read()
            except OSError as exc:
                raise TokenError(f"{self.what}: Graph report download failed: {exc}",
                                 "unreachable") from None
        return parse_usage_csv(body.decode("utf-8-sig"))


def parse_usage_csv(text: str) -> dict[str, tuple[int, int | None]]:
    """``getMailboxUsageDetail`` CSV -> {upn lower-case: (storage used, send/receive quota)}."""
    out: dict[str, tuple[int, int | None]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        upn = (row.get("User Principal Name") or "").strip().lower()
        try:
            used = int(row.get("Storage Used (Byte)") or "")
        except ValueError:
            continue
        raw = (row.get("Prohibit Send/Receive Quota (Byte)") or "").strip()
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else None
        if upn:
            out[upn] = (used, limit)
    return out
