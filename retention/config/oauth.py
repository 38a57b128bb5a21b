"""OAuth2 credential kinds of the policy file: ``type: oauth2 | microsoft365 | google``.

They stand under ``credentials:`` (named, shared by many accounts) or directly on an
account (``credentials: {type: google, ...}``). No I/O here: ``retention.auth`` turns one
into a token source; secrets are named by ``*_env``/``*_file`` keys, never written inline.

* ``oauth2``: a generic token endpoint; a refresh token (delegated, a person's mailbox)
  or, without one, client credentials (app-only); ``scopes`` as the provider wants them.
* ``microsoft365``: MSAL; ``flow: app`` (client credentials: a secret, or a certificate
  and its key) or ``flow: device`` (``retention login ACCOUNT`` once, then refresh tokens).
  ``graph_usage: true`` reads the mailbox's quota from Graph (needs Reports.Read.All).
* ``google``: a service-account key file with domain-wide delegation; subject = the mailbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictStr,
    Tag,
    model_validator,
)

Mechanism = Literal["OAUTHBEARER", "XOAUTH2"]
_MECHS: list[Mechanism] = ["OAUTHBEARER", "XOAUTH2"]


class _Oauth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The mailbox to log in as when it differs from the account's ``username``.
    username: StrictStr | None = None
    mechanisms: list[Mechanism] = Field(default_factory=lambda: list(_MECHS), min_length=1)
    #: CA file for the token endpoint's TLS (a private CA, a TLS-inspecting proxy).
    ca_file: Path | None = None

    def _one_of(self, env: str | None, file: Path | None, key: str, required: bool) -> None:
        if env is not None and file is not None:
            raise ValueError(f"{key}_env: give {key}_env or {key}_file, not both")
        if required and env is None and file is None:
            raise ValueError(f"{key}_env: give {key}_env or {key}_file")


class OAuth2Credential(_Oauth):
    type: Literal["oauth2"]
    token_url: StrictStr
    client_id: StrictStr
    client_secret_env: StrictStr | None = None
    client_secret_file: Path | None = None
    refresh_token_env: StrictStr | None = None
    refresh_token_file: Path | None = None
    scopes: list[StrictStr] = Field(default_factory=list)
    client_auth: Literal["post", "basic"] = "post"

    @model_validator(mode="after")
    def _check(self) -> OAuth2Credential:
        if not (self.token_url.startswith("https://")
                or self.token_url.startswith("http://127.0.0.1")):
            raise ValueError("token_url: must be an https:// URL")
        self._one_of(self.client_secret_env, self.client_secret_file, "client_secret", False)
        self._one_of(self.refresh_token_env, self.refresh_token_file, "refresh_token", False)
        delegated = self.refresh_token_env is not None or self.refresh_token_file is not None
        if not delegated and self.client_secret_env is None and self.client_secret_file is None:
            raise ValueError("client_secret_env: client credentials (no refresh token) need "
                             "client_secret_env or client_secret_file")
        return self

    @property
    def delegated(self) -> bool:
        return self.refresh_token_env is not None or self.refresh_token_file is not None


class Microsoft365Credential(_Oauth):
    type: Literal["microsoft365"]
    tenant: StrictStr
    client_id: StrictStr
    flow: Literal["app", "device"] = "app"
    client_secret_env: StrictStr | None = None
    client_secret_file: Path | None = None
    certificate_file: Path | None = None  # PEM certificate (and key, unless key_file)
    key_file: Path | None = None
    scopes: list[StrictStr] = Field(default_factory=list)  # default: by flow
    graph_usage: StrictBool = False
    authority_host: StrictStr = "https://login.microsoftonline.com"
    graph_url: StrictStr = "https://graph.microsoft.com"

    @model_validator(mode="after")
    def _check(self) -> Microsoft365Credential:
        given = [k for k in ("client_secret_env", "client_secret_file", "certificate_file")
                 if getattr(self, k) is not None]
        if self.flow == "app" and len(given) != 1:
            raise ValueError("client_secret_env: flow app needs exactly one of "
                             "client_secret_env, client_secret_file or certificate_file")
        if self.flow == "device" and given:
            raise ValueError(f"{given[0]}: flow device is a public client: no secret")
        if self.key_file is not None and self.certificate_file is None:
            raise ValueError("key_file: only with certificate_file")
        for key in ("authority_host", "graph_url"):
            if not str(getattr(self, key)).startswith("https://"):
                raise ValueError(f"{key}: must be an https:// URL")
        if self.graph_usage and self.flow != "app":
            raise ValueError("graph_usage: needs flow app (an application permission)")
        return self


class GoogleCredential(_Oauth):
    type: Literal["google"]
    service_account_file: Path
    scopes: list[StrictStr] = Field(default_factory=lambda: ["https://mail.google.com/"])
    token_uri: StrictStr | None = None


def _kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
    # Bracketed tags: the loader's error paths leave them out.
    return f"kind[{kind}]" if kind in ("oauth2", "microsoft365", "google") else None


OAuthCredential = Annotated[
    Annotated[OAuth2Credential, Tag("kind[oauth2]")]
    | Annotated[Microsoft365Credential, Tag("kind[microsoft365]")]
    | Annotated[GoogleCredential, Tag("kind[google]")],
    Discriminator(_kind, custom_error_type="invalid_type",
                  custom_error_message="type: must be oauth2, microsoft365 or google"),
]
OAUTH_TYPES = frozenset({"oauth2", "microsoft365", "google"})
#: Keys holding file paths (resolved against the policy file's folder on loading).
PATH_KEYS = ("ca_file", "client_secret_file", "refresh_token_file", "certificate_file",
             "key_file", "service_account_file")
