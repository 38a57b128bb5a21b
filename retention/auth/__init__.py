"""OAuth2 logins: access tokens from token endpoints, and the SASL strings that carry them.

This subpackage owns the only code that talks to an OAuth2 token service (a generic token
endpoint, Microsoft's identity platform through MSAL, Google's through google-auth, and
Microsoft Graph's mailbox usage report) and the SASL ``XOAUTH2`` and ``OAUTHBEARER``
(RFC 7628) initial responses. Adapters never see a credential kind: they get a
``BearerLogin`` (the ``SaslLogin`` hook of ``retention.adapters``) with a username, a token
and the mechanisms it can speak, and pick one from the server's capabilities.

Tokens never appear in a log line, a report, an exception or the journal: errors name the
credential, the token endpoint and the provider's error code (``invalid_grant``), never a
token or a secret, and ``BearerLogin.secrets()`` lets the adapters scrub server echoes.

Modules: ``sasl`` (pure: initial responses, mechanism choice, error challenges),
``tokens`` (the cache: reuse until shortly before expiry, one forced refresh after an auth
failure), ``oauth2`` (the generic RFC 6749 token endpoint over HTTP), ``microsoft``
(MSAL: client credentials, device code; Graph mailbox usage), ``google`` (service
account with domain-wide delegation), ``logins`` (credential kind -> token source, shared
for a whole sweep).
"""
