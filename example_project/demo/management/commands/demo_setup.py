"""``manage.py demo_setup``: create the demo superuser, the demo Synerise clients and the demo
site account (a Django password user who gets a Synerise token through OAUTH)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from demo import fake

#: A user of this site only (Django password); Synerise knows them through this site's OAUTH.
SITE_USER = {
    "username": "carol",
    "email": "carol@example.com",
    "first_name": "Carol",
    "last_name": "Lis",
}

#: Email/password clients created in FakeSynerise (the password is DEMO_CLIENT_PASSWORD).
DEMO_CLIENTS = [
    {"email": "alice@example.com", "first_name": "Alice", "last_name": "Nowak"},
    {"email": "bob@example.com", "first_name": "Bob", "last_name": "Kowalski"},
    # Held by FakeSynerise in TERMS_ACCEPTANCE_REQUIRED: shows conditional login.
    {
        "email": "terms@example.com",
        "first_name": "Tess",
        "last_name": "Terms",
        "condition": "TERMS_ACCEPTANCE_REQUIRED",
    },
]


class Command(BaseCommand):
    """Idempotent: updates the superuser's password; creates fake clients only with the fake."""

    help = "Create the demo superuser and, with FakeSynerise, the demo Synerise clients."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--json", action="store_true", help="Print the credentials as one JSON object."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        username = settings.DEMO_ADMIN_USERNAME
        admin, _created = user_model._default_manager.get_or_create(
            **{user_model.USERNAME_FIELD: username},
            defaults={"email": "admin@example.com"},
        )
        admin.is_staff = True
        admin.is_superuser = True
        admin.is_active = True
        admin.set_password(settings.DEMO_ADMIN_PASSWORD)
        admin.save()

        site_user, _created = user_model._default_manager.get_or_create(
            **{user_model.USERNAME_FIELD: SITE_USER["username"]},
            defaults={k: v for k, v in SITE_USER.items() if k != "username"},
        )
        site_user.set_password(settings.DEMO_CLIENT_PASSWORD)
        site_user.save()

        clients = []
        if settings.USE_FAKE_SYNERISE:
            self._trust_this_site()
            for spec in DEMO_CLIENTS:
                try:
                    body = fake.create_client(password=settings.DEMO_CLIENT_PASSWORD, **spec)
                except fake.FakeControlError as exc:
                    raise CommandError(str(exc)) from exc
                clients.append(
                    {
                        "email": spec["email"],
                        "password": settings.DEMO_CLIENT_PASSWORD,
                        "client_id": str(body.get("client_id", "")),
                    }
                )
            self._register_provider_clients()

        result: dict[str, Any] = {
            "admin": {"username": username, "password": settings.DEMO_ADMIN_PASSWORD},
            "clients": clients,
            "site_user": {
                "username": SITE_USER["username"],
                "password": settings.DEMO_CLIENT_PASSWORD,
            },
        }
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(f"Superuser: {username} / {settings.DEMO_ADMIN_PASSWORD}")
        for client in clients:
            self.stdout.write(
                f"Synerise client: {client['email']} / {client['password']} "
                f"(client id {client['client_id']})"
            )

    def _trust_this_site(self) -> None:
        """Set FakeSynerise's OAuth settings the way a workspace admin sets Synerise's:
        "JWT token" mode, this site's JWKS URL, issuer and audience."""
        synerise = settings.SYNERISE
        if not synerise.get("OAUTH_SIGNING_KEYS"):
            return
        try:
            fake.control(
                "oauth",
                {
                    "mode": "jwt",
                    "jwks_url": f"{settings.DEMO_SITE_URL}/synerise/oauth/jwks.json",
                    "issuer": synerise["OAUTH_ISSUER"],
                    "audience": synerise["OAUTH_AUDIENCE"],
                },
            )
        except fake.FakeControlError as exc:
            raise CommandError(str(exc)) from exc

    def _register_provider_clients(self) -> None:
        """Sign each demo provider account in once, in a fixed order.

        The fake numbers clients in creation order and forgets them when it stops, so doing
        this at start-up gives the Google, Apple and Facebook demo users the same client ids
        on every run, and they stay linked to the same Django users.
        """
        from django_synerise.client import get_client
        from django_synerise.exceptions import SyneriseError

        client = get_client()
        for slug, spec in fake.DEMO_PROVIDERS.items():
            try:
                client.login(
                    identity_provider=spec[0], identity_provider_token=fake.provider_token(slug)
                )
            except (SyneriseError, fake.FakeControlError) as exc:
                raise CommandError(f"Could not register the {slug} demo client: {exc}") from exc
