"""Providers: list with status and key hints, create, edit, enable/disable, delete, keys.

Forms are checked first with the same rulebook the config service applies
(`aibridge.rulebook.validate`), so every problem shows at once next to its field; the
config service stays the authority, and its INVALID_ARGUMENT ("field: message") is
shown next to the field it names. Secret fields (keys, AWS credentials) are write-only:
never rendered, never refilled after an error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import quote

from google.protobuf.field_mask_pb2 import FieldMask

from aibridge.config.v1 import config_service_pb2 as cs
from aibridge.config.v1 import provider_admin_service_pb2 as pa
from aibridge.config.v1 import provider_pb2
from aibridge.rulebook import (
    BY_WIRE,
    MAX_KEYS,
    TYPE_NAMES,
    TYPES,
    Bedrock,
    BedrockSpec,
    ProviderSpec,
    secret_problems,
    validate,
)
from console.api import Conflict, FieldError
from console.app import Ctx, Refused
from console.http import Response, Router, one, redirect

BEDROCK_TEXT = ("region", "model", "small_fast_model", "role_arn")
BEDROCK_SECRET = ("access_key", "access_key_secret")
TEXT_FIELDS = ("name", "type", "display_name", "base_url", *(f"bedrock.{f}" for f in BEDROCK_TEXT))
BEDROCK_TYPES = tuple(t.name for t in TYPES.values() if t.bedrock is not Bedrock.NEVER)


@dataclass
class FormState:
    """What a provider form shows again: the non-secret values and the errors by field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def add(self, name: str, message: str) -> None:
        where = form_field(name)
        if where is None:
            self.general.append(f"{name}: {message}" if name else message)
        else:
            self.errors.setdefault(where, []).append(message)


def form_field(api_field: str) -> str | None:
    """The form field of an API field name: keys[2] -> keys, bedrock.region as it is."""
    base = api_field.split("[", 1)[0]
    if base in ("keys", "secret"):
        return "keys"
    if base in ("bedrock.access_key", "bedrock.access_key_secret"):
        return "bedrock.credentials"
    if base in TEXT_FIELDS:
        return base
    return None


def register(router: Router[Ctx]) -> None:
    router.add("GET", "/providers", list_page)
    router.add("GET", "/providers/new", new_page)
    router.add("POST", "/providers", create)
    router.add("GET", "/providers/{name}", detail_page)
    router.add("POST", "/providers/{name}", update)
    router.add("POST", "/providers/{name}/state", set_state)
    router.add("POST", "/providers/{name}/delete", delete)
    router.add("POST", "/providers/{name}/keys", add_key)
    router.add("POST", "/providers/{name}/keys/{key_id}/delete", remove_key)


def provider_url(name: str, notice: str) -> str:
    """The provider's page; the name is quoted (it may come from the request path)."""
    return f"/providers/{quote(name, safe='')}?notice={notice}"


async def list_page(ctx: Ctx) -> Response:
    listed, snap = await asyncio.gather(
        ctx.call(ctx.stubs.providers.ListProviders, pa.ListProvidersRequest()),
        ctx.call(ctx.stubs.config.GetProviderSnapshot, cs.GetProviderSnapshotRequest()),
    )
    notice = ctx.request.query.get("notice", "")
    return ctx.render(
        "providers.html",
        providers=listed.providers,
        version=snap.snapshot.version,
        notice=NOTICES.get(notice, ""),
    )


NOTICES = {
    "created": "Provider created.",
    "deleted": "Provider deleted.",
    "saved": "Changes saved.",
    "key-added": "Key added.",
    "key-removed": "Key removed.",
    "enabled": "Provider enabled.",
    "disabled": "Provider disabled.",
}


def _new_form(ctx: Ctx, state: FormState, status: int = 200) -> Response:
    return ctx.render(
        "provider_new.html",
        status,
        state=state,
        types=TYPE_NAMES,
        bedrock_types=BEDROCK_TYPES,
        max_keys=MAX_KEYS,
        csrf=ctx.me.csrf,
    )


async def new_page(ctx: Ctx) -> Response:
    # Read first: an auditor (or a member) sees the config service's refusal, not a form.
    await ctx.call(ctx.stubs.providers.ListProviders, pa.ListProvidersRequest())
    return _new_form(ctx, FormState(values={"type": "openai"}))


def _bedrock_from(form: dict[str, list[str]]) -> BedrockSpec | None:
    spec = BedrockSpec(
        **{f: one(form, f"bedrock.{f}").strip() for f in BEDROCK_TEXT},
        access_key=one(form, "bedrock.access_key"),
        access_key_secret=one(form, "bedrock.access_key_secret"),
    )
    return None if spec.is_empty() else spec


async def create(ctx: Ctx) -> Response:
    form = ctx.form()
    state = FormState(values={name: one(form, name).strip() for name in TEXT_FIELDS})
    state.values["disabled"] = "on" if one(form, "disabled") else ""
    keys = tuple(k for k in form.get("keys", []) if k)
    bedrock = _bedrock_from(form)
    spec = ProviderSpec(
        name=state.values["name"],
        type=state.values["type"],
        display_name=state.values["display_name"],
        base_url=state.values["base_url"],
        enabled=not state.values["disabled"],
        keys=keys,
        bedrock=bedrock,
    )
    for name, message in validate(spec):
        state.add(name, message)
    if state.errors or state.general:
        return _new_form(ctx, state, 400)
    request = pa.CreateProviderRequest(
        name=spec.name,
        display_name=spec.display_name,
        type=TYPES[spec.type].wire,
        base_url=spec.base_url,
        disabled=not spec.enabled,
        keys=list(keys),
    )
    if bedrock is not None:
        request.bedrock.CopyFrom(
            pa.BedrockSettingsInput(
                **{f: getattr(bedrock, f) for f in (*BEDROCK_TEXT, *BEDROCK_SECRET)}
            )
        )
    try:
        created = await ctx.call(ctx.stubs.providers.CreateProvider, request)
    except FieldError as exc:
        state.add(exc.field, exc.text)
        return _new_form(ctx, state, 400)
    except Conflict as exc:
        state.add("name", exc.message)
        return _new_form(ctx, state, 409)
    return redirect(provider_url(created.provider.name, "created"))


async def _detail(ctx: Ctx, state: FormState | None = None, status: int = 200) -> Response:
    got = await ctx.call(
        ctx.stubs.providers.GetProvider, pa.GetProviderRequest(id_or_name=ctx.params["name"])
    )
    p = got.provider
    if state is None:
        state = FormState(
            values={
                "display_name": p.display_name,
                "base_url": p.base_url,
                **{f"bedrock.{f}": getattr(p.bedrock, f) for f in BEDROCK_TEXT},
            }
        )
    return ctx.render(
        "provider.html",
        status,
        p=p,
        state=state,
        has_bedrock=p.HasField("bedrock"),
        keyless=_keyless(p),
        max_keys=MAX_KEYS,
        csrf=ctx.me.csrf,
        notice=NOTICES.get(ctx.request.query.get("notice", ""), ""),
    )


def _keyless(p: provider_pb2.Provider) -> str:
    known = BY_WIRE.get(p.type)
    return known.keyless_because if known is not None else ""


async def detail_page(ctx: Ctx) -> Response:
    return await _detail(ctx)


async def update(ctx: Ctx) -> Response:
    form = ctx.form()
    name = ctx.params["name"]
    state = FormState(values={f: one(form, f).strip() for f in TEXT_FIELDS if f in form})
    request = pa.UpdateProviderRequest(
        id_or_name=name,
        display_name=state.values.get("display_name", ""),
        base_url=state.values.get("base_url", ""),
        etag=one(form, "etag"),
    )
    paths = ["display_name", "base_url"]
    if one(form, "has_bedrock"):
        for f in BEDROCK_TEXT:
            setattr(request.bedrock, f, state.values.get(f"bedrock.{f}", ""))
            paths.append(f"bedrock.{f}")
        access_key, secret = one(form, "bedrock.access_key"), one(form, "bedrock.access_key_secret")
        if access_key or secret:
            if not (access_key and secret):
                state.add("bedrock.access_key", "give both the access key id and the secret")
                return await _detail(ctx, state, 400)
            request.bedrock.access_key, request.bedrock.access_key_secret = access_key, secret
            paths += ["bedrock.access_key", "bedrock.access_key_secret"]
    request.update_mask.CopyFrom(FieldMask(paths=paths))
    try:
        await ctx.call(ctx.stubs.providers.UpdateProvider, request)
    except FieldError as exc:
        state.add(exc.field, exc.text)
        return await _detail(ctx, state, 400)
    except Conflict as exc:
        state.general.append(f"{exc.message} (the form now shows the current values)")
        return await _detail(ctx, FormState(general=state.general), 409)
    return redirect(provider_url(name, "saved"))


async def set_state(ctx: Ctx) -> Response:
    form = ctx.form()
    wanted = one(form, "enabled")
    if wanted not in ("true", "false"):
        raise Refused(400, "enabled must be true or false")
    request = pa.UpdateProviderRequest(
        id_or_name=ctx.params["name"],
        enabled=wanted == "true",
        update_mask=FieldMask(paths=["enabled"]),
    )
    await ctx.call(ctx.stubs.providers.UpdateProvider, request)
    notice = "enabled" if wanted == "true" else "disabled"
    return redirect(provider_url(ctx.params["name"], notice))


async def delete(ctx: Ctx) -> Response:
    form = ctx.form()
    if one(form, "confirm") != ctx.params["name"]:
        state = FormState(general=["Type the provider's name to confirm the deletion."])
        return await _detail(ctx, state, 400)
    await ctx.call(
        ctx.stubs.providers.DeleteProvider, pa.DeleteProviderRequest(id_or_name=ctx.params["name"])
    )
    return redirect("/providers?notice=deleted")


async def add_key(ctx: Ctx) -> Response:
    form = ctx.form()
    secret = one(form, "secret")
    state = FormState()
    for name, message in secret_problems("secret", secret):
        state.add(name, message)
    if not secret:
        state.add("secret", "paste the key to add")
    if state.errors:
        return await _detail(ctx, state, 400)
    request = pa.AddProviderKeyRequest(id_or_name=ctx.params["name"], secret=secret)
    try:
        await ctx.call(ctx.stubs.providers.AddProviderKey, request)
    except (FieldError, Conflict) as exc:
        state.add("secret", exc.text if isinstance(exc, FieldError) else exc.message)
        return await _detail(ctx, state, 400)
    return redirect(provider_url(ctx.params["name"], "key-added"))


async def remove_key(ctx: Ctx) -> Response:
    request = pa.DeleteProviderKeyRequest(
        id_or_name=ctx.params["name"], key_id=ctx.params["key_id"]
    )
    try:
        await ctx.call(ctx.stubs.providers.DeleteProviderKey, request)
    except (FieldError, Conflict) as exc:
        state = FormState()
        state.add("keys", exc.text if isinstance(exc, FieldError) else exc.message)
        return await _detail(ctx, state, 400)
    return redirect(provider_url(ctx.params["name"], "key-removed"))
