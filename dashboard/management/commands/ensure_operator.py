import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from environ import Env


class Command(BaseCommand):
    help = (
        "Create the operator account (a superuser) if it does not exist. The password comes from "
        "OPERATOR_PASSWORD, or is generated and printed once."
    )

    def handle(self, *args, **options) -> None:
        env = Env()
        username = env.str("OPERATOR_USERNAME", default="operator")
        email = env.str("OPERATOR_EMAIL", default="operator@example.com")
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Operator account '{username}' exists (change its password with "
                              f"`manage.py changepassword {username}`).")  # fmt: skip
            return
        password = env.str("OPERATOR_PASSWORD", default="") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(self.style.SUCCESS(f"Created operator account '{username}'."))
        if not env.str("OPERATOR_PASSWORD", default=""):
            self.stdout.write(
                f"  password: {password}   (shown once; change it with `manage.py changepassword`)"
            )
