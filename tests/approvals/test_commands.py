"""``manage.py expire_approvals``: lists what it would expire, and expires only --for-real."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from approvals.models import Approval
from tests.approvals.test_services import pending


def expire(*args: str) -> str:
    out = StringIO()
    call_command("expire_approvals", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_it_lists_the_stale_approvals_then_expires_them_for_real(settings):
    settings.APPROVAL_TTL_SECONDS = 60
    pending("a1", "c1")
    pending("a2", "c2")
    Approval.objects.filter(call_id="c1").update(created_at=timezone.now() - timedelta(minutes=5))
    dry = expire().splitlines()
    assert len(dry) == 2
    assert dry[0].startswith("  a1  write_file (c1)  by architect, pending 30")
    assert dry[1] == "would expire 1 approval(s) pending longer than 60 s (dry run; add --for-real)"
    assert set(Approval.objects.values_list("status", flat=True)) == {"pending"}

    real = expire("--for-real").splitlines()
    assert real[0].startswith("  a1  write_file (c1)")
    assert real[-1] == "expired 1 approval(s) pending longer than 60 s"
    assert Approval.objects.get(call_id="c1").status == "expired"
    assert Approval.objects.get(call_id="c2").status == "pending"
    assert expire("--for-real").splitlines() == ["expired 0 approval(s) pending longer than 60 s"]
