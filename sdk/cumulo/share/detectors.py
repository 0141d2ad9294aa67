"""Which detectors find secrets: detect-secrets' plugins (the ``share`` extra) and cumulo's own.

The high-entropy heuristics of detect-secrets are left out (see :mod:`cumulo.share`); cumulo adds
Hugging Face, Google, Anthropic and current OpenAI keys, every provider's key format that the
provider declares (``Credential.pattern``: Lambda Cloud's ``secret_...`` keys), GitHub fine-grained tokens,
``Authorization:`` / API-key headers, passwords in connection strings and secrets in URL query
strings, on detect-secrets' own regex base; and :func:`_secret_pairs`, which finds values given to
a secret-looking name (``DB_PASSWORD=...``, ``aws_secret_access_key = ...``, ``"api_token": "..."``)
quoted or not, where detect-secrets' keyword rule needs quotes and has no "token".
"""

from __future__ import annotations

import re
from typing import Any

from ..exceptions import MissingDependency
from ..providers import provider_classes

__all__: list[str] = []


def _detect_secrets() -> Any:
    try:
        import detect_secrets.plugins.base as base
    except ImportError as exc:
        raise MissingDependency(
            "cumulo share needs detect-secrets to find secrets: pip install 'cumulo[share]' "
            "(nothing was written)") from exc
    return base


def _extra_plugins(base: Any) -> list[type]:
    """Detectors detect-secrets 1.5 lacks, written on its own RegexBasedDetector base."""
    rx = base.RegexBasedDetector

    class HuggingFaceTokenDetector(rx):  # type: ignore[misc, valid-type]
        """Hugging Face user access tokens (hf_ + 34 letters and digits)."""

        secret_type = "Hugging Face Token"
        denylist = [re.compile(r"\b(hf_[A-Za-z0-9]{30,})\b")]

    class GoogleApiKeyDetector(rx):  # type: ignore[misc, valid-type]
        """Google Cloud API keys (AIza + 35 characters)."""

        secret_type = "Google API Key"
        denylist = [re.compile(r"\b(AIza[0-9A-Za-z_\-]{35})")]

    class AuthorizationHeaderDetector(rx):  # type: ignore[misc, valid-type]
        """HTTP credentials: Authorization (Bearer, Basic, Token, ...) and API-key headers."""

        secret_type = "Authorization Header"
        denylist = [
            re.compile(r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token|digest|apikey|"
                       r"api-key|sso-key|key)\s+([A-Za-z0-9_\-.+/=~:]{8,})"),
            re.compile(r"(?i)\b(?:x-api-key|api-key|x-auth-token|x-access-token|private-token)[\"']?\s*[:=]\s*"
                       r"[\"']?([A-Za-z0-9_\-.+/=~]{12,})"),
        ]

    class ConnectionStringPasswordDetector(rx):  # type: ignore[misc, valid-type]
        """Passwords in connection strings (ODBC, ADO.NET, libpq key=value)."""

        secret_type = "Password in Connection String"
        denylist = [
            re.compile(r"(?i)(?:^|[;\s\"'])(?:password|pwd|passwd)\s*=\s*([^;\"'\s&]{4,})(?=;|$|[\"'\s])"),
        ]

    class QueryStringSecretDetector(rx):  # type: ignore[misc, valid-type]
        """Credentials in URL query strings (?token=..., &api_key=..., &sig=...)."""

        secret_type = "Secret in URL Query"
        denylist = [
            re.compile(r"(?i)[?&](?:password|passwd|pwd|token|access_token|api_key|apikey|secret|client_secret|sig)"
                       r"=([^&#\s\"'<>]{6,})"),
        ]

    class AWSSecretKeyUnquotedDetector(rx):  # type: ignore[misc, valid-type]
        """AWS secret access keys as env, .env and ~/.aws/credentials print them, unquoted
        (``AWS_SECRET_ACCESS_KEY=...``, ``aws_secret_access_key = ...``): detect-secrets' rule needs quotes."""

        secret_type = "AWS Secret Access Key"
        denylist = [re.compile(r"(?i)aws\w{0,20}?(?:key|pwd|pw|password|pass|token)\w{0,20}?[\"']?\s*[=:]\s*"
                               r"([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+=])")]

    class AnthropicKeyDetector(rx):  # type: ignore[misc, valid-type]
        """Anthropic API, admin and OAuth keys (sk-ant-api03-..., sk-ant-admin01-..., sk-ant-oat01-...)."""

        secret_type = "Anthropic API Key"
        denylist = [re.compile(r"\bsk-ant-[a-z]{2,8}\d{0,3}-[A-Za-z0-9_\-]{20,}")]

    class OpenAIKeyDetector(rx):  # type: ignore[misc, valid-type]
        """OpenAI project, admin and service-account keys (sk-proj-, sk-admin-, sk-svcacct-), with or without
        the T3BlbkFJ marker detect-secrets' OpenAI rule requires."""

        secret_type = "OpenAI Token"
        denylist = [re.compile(r"\bsk-(?:proj|admin|svcacct|None)-[A-Za-z0-9_\-]{20,}")]

    class GitHubFineGrainedTokenDetector(rx):  # type: ignore[misc, valid-type]
        """GitHub fine-grained personal access tokens (github_pat_ + 22 + _ + 59 characters)."""

        secret_type = "GitHub Token"
        denylist = [re.compile(r"\bgithub_pat_[A-Za-z0-9_]{30,}")]

    return [AWSSecretKeyUnquotedDetector, AnthropicKeyDetector, OpenAIKeyDetector, GitHubFineGrainedTokenDetector,
            HuggingFaceTokenDetector, *_provider_plugins(base), GoogleApiKeyDetector, AuthorizationHeaderDetector,
            ConnectionStringPasswordDetector, QueryStringSecretDetector]


def _provider_plugins(base: Any) -> list[type]:
    """One detector per provider credential that declares its format: kind "<what>" title-cased
    ("Lambda Cloud API Key"), class named after it (detect-secrets reports plugins by class name)."""
    out: list[type] = []
    seen = set()
    for cls in provider_classes():
        for credential in cls.credentials:
            if not credential.pattern or credential.pattern in seen:
                continue
            seen.add(credential.pattern)
            kind = " ".join(w[:1].upper() + w[1:] for w in credential.what.split())
            name = "".join(w for w in kind.title().split() if w.isalnum()) + "Detector"
            out.append(type(name, (base.RegexBasedDetector,), {
                "__doc__": f"{credential.what} (declared by the {cls.name} provider).",
                "secret_type": kind, "denylist": [re.compile(credential.pattern)]}))
    return out


#: The detect-secrets plugins used, by class name (format-specific first: their kind wins a tie).
_BUILTIN = ("AWSKeyDetector", "AzureStorageKeyDetector", "GitHubTokenDetector", "GitLabTokenDetector",
            "SlackDetector", "StripeDetector", "OpenAIDetector", "PypiTokenDetector", "NpmDetector",
            "DiscordBotTokenDetector", "TelegramBotTokenDetector", "TwilioKeyDetector", "SendGridDetector",
            "MailchimpDetector", "SquareOAuthDetector", "ArtifactoryDetector", "JwtTokenDetector",
            "IbmCosHmacDetector", "IbmCloudIamDetector", "CloudantDetector", "SoftlayerDetector",
            "BasicAuthDetector")
#: Plugins that read an assignment (name = value): their values pass detect-secrets' false-positive filters.
_ASSIGNMENT = {"KeywordDetector", "IbmCloudIamDetector", "CloudantDetector", "SoftlayerDetector",
               "IbmCosHmacDetector", "ConnectionStringPasswordDetector", "QueryStringSecretDetector",
               "ArtifactoryDetector"}


def _builtin_plugins() -> list[Any]:
    import importlib
    import inspect
    import pkgutil

    import detect_secrets.plugins as pkg

    found: dict[str, type] = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{mod.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if name in _BUILTIN:
                found[name] = obj
    return [found[n]() for n in _BUILTIN if n in found]


#: Kind reported for a value given to a secret-looking name.
SECRET_NAMED = "Secret-named Value"
#: Last word of a name that says the value is a secret (after dropping the words in _NAME_TAIL).
_SECRET_LAST = {"token", "secret", "secrets", "password", "passwords", "passwd", "pwd", "passphrase",
                "credential", "credentials", "apikey", "secretkey", "accesskey", "privatekey"}
#: Last two words that do.
_SECRET_PAIR = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("signing", "key"),
                ("account", "key"), ("master", "key"), ("auth", "key"), ("encryption", "key"), ("gh", "pat"),
                ("github", "pat"), ("gitlab", "pat"), ("git", "pat"), ("hf", "pat")}
#: Trailing words that keep a name's meaning (DB_PASSWORD_B64, TOKEN_VALUE, PASSWORD2).
_NAME_TAIL = {"value", "str", "string", "b64", "base64", "hex", "raw"}
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
#: A line without one of these has no secret-looking name (checked first: most lines have none).
_HINT = re.compile(r"token|secret|passw|pwd|passphrase|credential|key|pat", re.IGNORECASE)
_NAME_START = re.compile(r"(?<![\w.\-$])[A-Za-z_]")
#: NAME, an optional annotation (token: str = ...), the operator, then a quoted or a bare value.
_PAIR = re.compile(
    r"""(?P<nq>["']?)(?P<name>[A-Za-z_][\w.\-]*)(?P=nq)(?P<ann>\s*:\s*[A-Za-z_][\w.\[\], |]*?)?\s*"""
    r"""(?P<op>:=|=(?!=)|:)[ \t]*(?:"(?P<dq>[^"\n]*)"|'(?P<sq>[^'\n]*)'|`(?P<bq>[^`\n]*)`|"""
    r"""(?P<bare>[^\s"'`,;&#(){}\[\]<>]+)(?=[\s"'`,;&#)}\]<>]|$))""")
#: A path: /, ~/, ./ or ../ then names (a name of 24 letters and digits is rather part of a key, as AWS's have /).
_PATH = re.compile(r"(?:~|\.{1,2})?(?:/(?:[\w.\-]*[._\-][\w.\-]*|[\w]{1,23}))+/?")
_NUMBER = re.compile(r"[+\-]?(\d[\d_]*)?\.?\d+([eE][+\-]?\d+)?")
_REFERENCE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
_NOT_VALUES = {"none", "null", "nil", "true", "false", "yes", "no", "on", "off", "undefined", "nan", "required",
               "optional", "str", "string", "bytes", "int", "secret", "password", "token", "lambda", "self"}
#: Words after which a value may hold spaces (a passphrase); any other secret is one word.
_SPACED = {"password", "passwords", "passwd", "pwd", "passphrase"}


def _secret_word(name: str) -> str | None:
    """The word that makes ``name`` a secret's name ("password", "token", "api key"), or None:
    DB_PASSWORD, aws_secret_access_key, apiKey, GH_PAT have one; token_type, secret_name,
    tokenizer, max_tokens, n_workers, PATH have none (a name is judged by its last word)."""
    if "[REDACTED:" in name:
        return None  # a key share redacted: its kind's words (api-key) say nothing about the value
    words = [w.lower() for w in _WORDS.findall(name)]
    while words and (words[-1] in _NAME_TAIL or words[-1].isdigit()):
        words.pop()
    if words and words[-1] in _SECRET_LAST:
        return words[-1]
    if tuple(words[-2:]) in _SECRET_PAIR:
        return " ".join(words[-2:])
    return None


def _value_shaped(value: str, *, word: str, bare: bool, python: bool, colon: bool) -> bool:
    """Could ``value``, given to a name whose secret word is ``word``, be a secret rather than a number, a
    flag, a path, a word of text or (in Python) a variable?"""
    v = value.strip()
    if len(v) < 4 or v.lower() in _NOT_VALUES or _NUMBER.fullmatch(v):
        return False
    if word not in _SPACED and re.search(r"\s", v):
        return False  # only a passphrase has spaces
    if word == "token" and not ((len(v) >= 12 and re.search(r"\d", v)) or len(v) >= 24):
        return False  # NLP tokens ({"token": "Hello", "logprob": ...}) are words; access tokens are long
    if bare:
        if v.startswith(("$", "%")) or v.endswith((":", "=")) or _PATH.fullmatch(v):
            return False  # a shell or batch variable, the start of something else, a path
        if python and _REFERENCE.fullmatch(v):
            return False  # token = my_token, key=self.api_key: a variable, not a value
        if _REFERENCE.fullmatch(v) and _secret_word(v):
            return False  # --password=PASSWORD in help text, token=TOKEN
        if colon and not (len(v) >= 12 and re.search(r"[A-Za-z]", v) and re.search(r"\d", v)):
            return False  # prose ("password: the usual one") and YAML words; only token-like values
    return True


def _secret_pairs(line: str, *, python: bool) -> list[tuple[int, int]]:
    """(start, end) of each value given to a secret-looking name in one line: ``NAME=value`` as env,
    .env and ~/.aws/credentials files print them, ``NAME = "value"``, ``"NAME": "value"``,
    ``name: str = "value"``, ``f(token="value")``. ``python``: the line is Python, so a bare value is
    a variable and not a secret. Values still go through the scanner's false-positive filters."""
    found: list[tuple[int, int]] = []
    if not _HINT.search(line):
        return found
    for start in _NAME_START.finditer(line):
        pos = start.start()
        tries = [pos - 1, pos] if pos and line[pos - 1] in "\"'" else [pos]
        for at in tries:
            m = _PAIR.match(line, at)
            word = _secret_word(m.group("name")) if m else None
            if not m or not word:
                continue
            group = next(g for g in ("dq", "sq", "bq", "bare") if m.group(g) is not None)
            if _value_shaped(m.group(group), word=word, bare=group == "bare", python=python,
                             colon=m.group("op") == ":"):
                found.append(m.span(group))
            break
    return found
