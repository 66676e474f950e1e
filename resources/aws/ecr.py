"""Amazon ECR through boto3: repositories with the target's settings, cached auth tokens, image listing,
and where SOCI output may be tagged.

Lifecycle policy (the safe choice we enforce): ECR lifecycle rules cannot select or exclude SOCI artifacts
(aws/containers-roadmap#2613). A SOCI v2 index manifest is an untagged child of the tagged SOCI-enabled
image index, and a SOCI v1 index is an untagged referrer, so a rule with `tagStatus: untagged` (or `any`)
can expire SOCI indexes that tagged images still rely on, which silently turns lazy pulls back into
full pulls. `ensure_repository` therefore refuses lifecycle policies with `untagged`/`any` rules unless
`allow_untagged_expiry=True` is set explicitly, and by default (`lifecycle_policy=None`) leaves the
repository's policy untouched. Tagged rules expire whole images (every tag on that digest), so scope them
to tags you really want gone; `<tag>-soci` tags age together with the `<tag>` they were made from.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from resources.builders.docker_auth import RegistryCredential
from resources.defaults import SOCI_TAG_SUFFIX
from resources.errors import StreamableError
from resources.log import LogFn

TagMutability = Literal["MUTABLE", "IMMUTABLE", "MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION"]
TOKEN_LIFETIME = timedelta(hours=12)
_EXCLUSION_RE = re.compile(r"^[0-9a-zA-Z._*-]{1,128}$")
_REPO_RE = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")


class EcrError(StreamableError, RuntimeError):
    """An ECR call failed or a setting is invalid; names the repository and operation, never a token."""

    def __init__(self, message: str, *, repository: str | None = None, code: str | None = None) -> None:
        self.repository = repository
        self.code = code
        super().__init__(message)


def check_lifecycle_policy(policy: Mapping[str, Any], *, allow_untagged_expiry: bool = False) -> None:
    """Raise EcrError unless `policy` is well-formed and keeps SOCI artifacts (no untagged/any rules)."""
    rules = policy.get("rules")
    if not isinstance(rules, list) or not rules:
        raise EcrError("lifecycle policy must have a non-empty 'rules' list")
    for i, rule in enumerate(rules):
        sel = rule.get("selection") if isinstance(rule, Mapping) else None
        if not isinstance(sel, Mapping) or "rulePriority" not in rule:
            raise EcrError(f"lifecycle policy rule #{i + 1} needs rulePriority and selection")
        status = sel.get("tagStatus")
        if status not in ("tagged", "untagged", "any"):
            raise EcrError(
                f"lifecycle policy rule priority {rule['rulePriority']}: tagStatus must be tagged|untagged|any"
            )
        if status == "tagged" and not (sel.get("tagPatternList") or sel.get("tagPrefixList")):
            raise EcrError(
                f"lifecycle policy rule priority {rule['rulePriority']}: "
                "tagged rules need tagPatternList or tagPrefixList"
            )
        if status in ("untagged", "any") and not allow_untagged_expiry:
            raise EcrError(
                f"lifecycle policy rule priority {rule['rulePriority']} expires {status} images; ECR rules cannot "
                "exclude SOCI index manifests (aws/containers-roadmap#2613), so this would delete SOCI indexes that "
                "tagged images use. Scope the rule to tags, or set allow_untagged_expiry=True if you accept that."
            )


@dataclass(frozen=True)
class RepositorySettings:
    """What a target wants from its ECR repository."""

    scan_on_push: bool = True
    tag_mutability: TagMutability = "MUTABLE"
    mutability_exclusions: tuple[str, ...] = ()
    """Wildcard tag filters (max 5) for the *_WITH_EXCLUSION modes."""
    encryption: Literal["AES256", "KMS"] = "AES256"
    kms_key: str | None = None
    lifecycle_policy: Mapping[str, Any] | None = None
    """None leaves the repository's policy as it is."""
    allow_untagged_expiry: bool = False
    resource_tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        excl = self.tag_mutability.endswith("_WITH_EXCLUSION")
        if excl and not self.mutability_exclusions:
            raise EcrError(f"tag_mutability {self.tag_mutability} needs mutability_exclusions (1-5 wildcard filters)")
        if not excl and self.mutability_exclusions:
            raise EcrError(f"mutability_exclusions only apply to *_WITH_EXCLUSION modes, not {self.tag_mutability}")
        if len(self.mutability_exclusions) > 5:
            raise EcrError("ECR allows at most 5 tag mutability exclusion filters")
        for f in self.mutability_exclusions:
            if not _EXCLUSION_RE.match(f):
                raise EcrError(f"tag mutability exclusion filter {f!r} must match [0-9a-zA-Z._*-]{{1,128}}")
        if self.kms_key and self.encryption != "KMS":
            raise EcrError("kms_key is only used with encryption='KMS'")
        if self.lifecycle_policy is not None:
            check_lifecycle_policy(self.lifecycle_policy, allow_untagged_expiry=self.allow_untagged_expiry)


@dataclass(frozen=True)
class RepositoryState:
    """A repository after ensure_repository: its URI and what was created or changed."""

    name: str
    uri: str
    created: bool
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class EcrAuthorization:
    """Registry host and Basic credentials (`AWS:<token>`) valid until expires_at; the token is hidden in repr()."""

    registry: str
    username: str
    password: str = field(repr=False)
    expires_at: datetime

    def credential(self) -> RegistryCredential:
        """As a RegistryCredential for a temporary DOCKER_CONFIG."""
        return RegistryCredential(registry=self.registry, username=self.username, password=self.password)


@dataclass(frozen=True)
class SociTagChoice:
    """The tag SOCI output goes to, and a sentence saying why (for logs and metadata)."""

    tag: str
    suffixed: bool
    message: str


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$")


def tag_is_immutable(tag: str, mutability: str, exclusions: Sequence[str]) -> bool:
    """Whether ECR refuses to overwrite `tag` under this mutability setting."""
    matched = any(_wildcard(p).match(tag) for p in exclusions)
    if mutability == "IMMUTABLE":
        return True
    if mutability == "IMMUTABLE_WITH_EXCLUSION":
        return not matched
    if mutability == "MUTABLE_WITH_EXCLUSION":
        return matched
    return False


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EcrRegistry:
    """One ECR registry (account + region) through a boto3 `ecr` client."""

    def __init__(
        self,
        client: Any,
        *,
        registry_id: str | None = None,
        refresh_margin: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = _utcnow,
        log: LogFn | None = None,
    ) -> None:
        if refresh_margin >= TOKEN_LIFETIME:
            raise EcrError(f"refresh_margin {refresh_margin} must be shorter than the 12 h token lifetime")
        self.client = client
        self.registry_id = registry_id
        self.refresh_margin = refresh_margin
        self.clock = clock
        self.log = log or (lambda _m: None)
        self._auth: EcrAuthorization | None = None
        self._refresh_at = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()
        self.token_fetches = 0

    def __repr__(self) -> str:
        return f"EcrRegistry(registry_id={self.registry_id!r}, region={self.client.meta.region_name!r})"

    # -- errors ----------------------------------------------------------------------------------------------

    def _call(self, operation: str, repository: str | None, **kwargs: Any) -> Any:
        """Call `operation` on the client; AWS errors become EcrError naming the repository."""
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            raise self._error(exc, operation, repository) from None
        except BotoCoreError as exc:
            where = f" for repository {repository!r}" if repository else ""
            raise EcrError(
                f"ECR {operation}{where} failed: {type(exc).__name__}: {exc}", repository=repository
            ) from None

    @staticmethod
    def _error(exc: ClientError, operation: str, repository: str | None) -> EcrError:
        err = exc.response.get("Error", {})
        code = err.get("Code") or "Unknown"
        message = err.get("Message") or ""
        attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
        where = f" for repository {repository!r}" if repository else ""
        hint = ""
        if code in ("ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"):
            hint = f" (throttled by AWS after {int(attempts or 0) + 1} attempt(s); raise max_attempts or retry later)"
        elif code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            hint = f" (the IAM role needs ecr:{_action(operation)} on this repository)"
        return EcrError(
            f"ECR {_action(operation)}{where} failed: {code}: {message}{hint}", repository=repository, code=code
        )

    # -- repositories ------------------------------------------------------------------------------------------

    def describe_repository(self, name: str) -> dict[str, Any] | None:
        """The repository description, or None when it does not exist."""
        kwargs: dict[str, Any] = {"repositoryNames": [name]}
        if self.registry_id:
            kwargs["registryId"] = self.registry_id
        try:
            return self._call("describe_repositories", name, **kwargs)["repositories"][0]
        except EcrError as exc:
            if exc.code == "RepositoryNotFoundException":
                return None
            raise

    def ensure_repository(self, name: str, settings: RepositorySettings = RepositorySettings()) -> RepositoryState:
        """Create the repository with `settings`, or bring an existing one in line (encryption cannot change)."""
        if not _REPO_RE.match(name) or len(name) > 256:
            raise EcrError(f"{name!r} is not a valid ECR repository name", repository=name)
        reg = {"registryId": self.registry_id} if self.registry_id else {}
        repo = self.describe_repository(name)
        if repo is None:
            kwargs: dict[str, Any] = {
                "repositoryName": name,
                "imageTagMutability": settings.tag_mutability,
                "imageScanningConfiguration": {"scanOnPush": settings.scan_on_push},
                "encryptionConfiguration": {"encryptionType": settings.encryption,
                                            **({"kmsKey": settings.kms_key} if settings.kms_key else {})},
                **reg,
            }
            if settings.mutability_exclusions:
                kwargs["imageTagMutabilityExclusionFilters"] = _exclusion_filters(settings)
            if settings.resource_tags:
                kwargs["tags"] = [{"Key": k, "Value": v} for k, v in sorted(settings.resource_tags.items())]
            try:
                repo = self._call("create_repository", name, **kwargs)["repository"]
            except EcrError as exc:
                if exc.code != "RepositoryAlreadyExistsException":  # lost a race with another run: converge below
                    raise
                repo = self.describe_repository(name)
                assert repo is not None
            else:
                self.log(f"ECR repository {name} created ({settings.tag_mutability}, scan on push "
                         f"{settings.scan_on_push}, {settings.encryption})")
                changed = self._apply_lifecycle(name, settings, reg)
                return RepositoryState(name=name, uri=repo["repositoryUri"], created=True, changed=tuple(changed))
        changed = self._converge(name, repo, settings, reg)
        if changed:
            self.log(f"ECR repository {name} updated: {', '.join(changed)}")
        return RepositoryState(name=name, uri=repo["repositoryUri"], created=False, changed=tuple(changed))

    def _converge(self, name: str, repo: Mapping[str, Any], settings: RepositorySettings, reg: dict) -> list[str]:
        """Update what ECR lets us update on an existing repository; refuse an encryption mismatch."""
        changed: list[str] = []
        enc = repo.get("encryptionConfiguration") or {"encryptionType": "AES256"}
        if enc.get("encryptionType") != settings.encryption or (
            settings.kms_key and enc.get("kmsKey") not in (settings.kms_key, None)
        ):
            raise EcrError(
                f"repository {name!r} exists with encryption {enc.get('encryptionType')} but the target asks for "
                f"{settings.encryption}; ECR cannot change encryption after creation (recreate the repository or "
                "align the setting)", repository=name)
        have_excl = sorted(f.get("filter", "") for f in repo.get("imageTagMutabilityExclusionFilters") or [])
        if repo.get("imageTagMutability") != settings.tag_mutability or have_excl != sorted(
            settings.mutability_exclusions
        ):
            kwargs: dict[str, Any] = {"repositoryName": name, "imageTagMutability": settings.tag_mutability, **reg}
            if settings.mutability_exclusions:
                kwargs["imageTagMutabilityExclusionFilters"] = _exclusion_filters(settings)
            self._call("put_image_tag_mutability", name, **kwargs)
            changed.append(f"tag mutability {repo.get('imageTagMutability')} -> {settings.tag_mutability}")
        scan = (repo.get("imageScanningConfiguration") or {}).get("scanOnPush", False)
        if scan != settings.scan_on_push:
            self._call("put_image_scanning_configuration", name, repositoryName=name,
                       imageScanningConfiguration={"scanOnPush": settings.scan_on_push}, **reg)
            changed.append(f"scan on push {scan} -> {settings.scan_on_push}")
        return changed + self._apply_lifecycle(name, settings, reg)

    def _apply_lifecycle(self, name: str, settings: RepositorySettings, reg: dict) -> list[str]:
        """Put the lifecycle policy when one is configured and differs from the current one."""
        if settings.lifecycle_policy is None:
            return []
        wanted = json.dumps(settings.lifecycle_policy, sort_keys=True)
        try:
            current = self._call("get_lifecycle_policy", name, repositoryName=name, **reg)["lifecyclePolicyText"]
            if json.dumps(json.loads(current), sort_keys=True) == wanted:
                return []
        except EcrError as exc:
            if exc.code != "LifecyclePolicyNotFoundException":
                raise
        self._call("put_lifecycle_policy", name, repositoryName=name, lifecyclePolicyText=wanted, **reg)
        return ["lifecycle policy"]

    # -- auth ----------------------------------------------------------------------------------------------

    def authorization(self) -> EcrAuthorization:
        """The cached registry credentials, fetched again `refresh_margin` before they expire.

        A token granted for less than twice the margin (clock skew, short-lived credentials) is refreshed at
        half its remaining life instead, and one that is already expired at most once a minute, so a bad
        clock never turns into a GetAuthorizationToken call per request.
        """
        with self._lock:
            now = self.clock()
            if self._auth is None or now >= self._refresh_at:
                self._auth = self._fetch_authorization()
                lifetime = self._auth.expires_at - now
                if lifetime <= timedelta(0):
                    self._refresh_at = now + timedelta(minutes=1)
                    self.log(f"ECR token for {self._auth.registry} is already expired by this host's clock "
                             f"(expires {self._auth.expires_at.isoformat()}); check the clock")
                else:
                    self._refresh_at = self._auth.expires_at - min(self.refresh_margin, lifetime / 2)
            return self._auth

    def _fetch_authorization(self) -> EcrAuthorization:
        kwargs = {"registryIds": [self.registry_id]} if self.registry_id else {}
        data = self._call("get_authorization_token", None, **kwargs)["authorizationData"][0]
        self.token_fetches += 1
        try:
            user, sep, password = base64.b64decode(data["authorizationToken"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, KeyError):
            raise EcrError("ECR GetAuthorizationToken returned a token that is not base64 'user:password'") from None
        if not sep:
            raise EcrError("ECR GetAuthorizationToken returned a token without 'user:password'")
        endpoint = data.get("proxyEndpoint", "")
        host = re.sub(r"^https?://", "", endpoint).rstrip("/")
        expires = data.get("expiresAt")
        if not isinstance(expires, datetime):
            expires = self.clock() + TOKEN_LIFETIME
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        self.log(f"ECR token fetched for {host} (expires {expires.isoformat()})")
        return EcrAuthorization(registry=host, username=user, password=password, expires_at=expires)

    @property
    def registry_host(self) -> str:
        """`<account>.dkr.ecr.<region>.amazonaws.com`."""
        return self.authorization().registry

    def docker_credentials(self) -> list[RegistryCredential]:
        """Fresh push credentials for buildctl's temporary DOCKER_CONFIG (a CredentialsProvider)."""
        return [self.authorization().credential()]

    def registry_client(self, **kwargs: Any) -> Any:
        """A RegistryClient for this registry with the current token (make a new one per run: tokens last 12 h)."""
        from resources.registry import RegistryClient  # noqa: PLC0415 - optional dependency between modules

        auth = self.authorization()
        return RegistryClient(auth.registry, username=auth.username, password=auth.password, **kwargs)

    # -- images ------------------------------------------------------------------------------------------------

    def _paginate(self, operation: str, key: str, repository: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        if self.registry_id:
            kwargs["registryId"] = self.registry_id
        try:
            for page in self.client.get_paginator(operation).paginate(repositoryName=repository, **kwargs):
                yield from page.get(key, [])
        except ClientError as exc:
            raise self._error(exc, operation, repository) from None
        except BotoCoreError as exc:
            raise EcrError(f"ECR {_action(operation)} for repository {repository!r} failed: {type(exc).__name__}",
                           repository=repository) from None

    def list_images(self, repository: str, *, tag_status: Literal["TAGGED", "UNTAGGED", "ANY"] = "ANY",
                    page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every image id (`imageDigest`, `imageTag`) in the repository, following pagination."""
        yield from self._paginate("list_images", "imageIds", repository, filter={"tagStatus": tag_status},
                                  PaginationConfig={"PageSize": page_size})

    def describe_images(self, repository: str, *, tag_status: Literal["TAGGED", "UNTAGGED", "ANY"] = "ANY",
                        page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every image's details (tags, digest, pushed at, size, media types), following pagination."""
        yield from self._paginate("describe_images", "imageDetails", repository, filter={"tagStatus": tag_status},
                                  PaginationConfig={"PageSize": page_size})

    # -- SOCI tags -----------------------------------------------------------------------------------------------

    def soci_tag_for(self, repository: str, tag: str) -> SociTagChoice:
        """`<tag>-soci` when the repository will not let `tag` be overwritten, else `tag` itself."""
        if tag.endswith(SOCI_TAG_SUFFIX):
            raise EcrError(
                f"tag {tag!r} in {repository!r} already carries the {SOCI_TAG_SUFFIX} suffix", repository=repository
            )
        repo = self.describe_repository(repository)
        if repo is None:
            raise EcrError(f"ECR repository {repository!r} does not exist", repository=repository,
                           code="RepositoryNotFoundException")
        mutability = repo.get("imageTagMutability", "MUTABLE")
        exclusions = [f.get("filter", "") for f in repo.get("imageTagMutabilityExclusionFilters") or []]
        if tag_is_immutable(tag, mutability, exclusions):
            soci = f"{tag}{SOCI_TAG_SUFFIX}"
            return SociTagChoice(soci, True, f"repository {repository} has immutable tags ({mutability}) for {tag!r}: "
                                             f"the SOCI-enabled index is pushed as {soci!r}, {tag!r} is left as built")
        return SociTagChoice(tag, False, f"repository {repository} allows overwriting {tag!r} ({mutability}): "
                                         f"the SOCI-enabled index replaces {tag!r}")


def _exclusion_filters(settings: RepositorySettings) -> list[dict[str, str]]:
    return [{"filter": f, "filterType": "WILDCARD"} for f in settings.mutability_exclusions]


def _action(operation: str) -> str:
    """snake_case boto3 operation -> the API action name (`create_repository` -> `CreateRepository`)."""
    return "".join(part.capitalize() for part in operation.split("_"))
