"""The error tree: every error has a code, every code a status, the body one shape."""

from __future__ import annotations

import registry.errors as errors


def all_error_classes(root: type = errors.RegistryError) -> list[type[errors.RegistryError]]:
    found = [root]
    for sub in root.__subclasses__():
        found += all_error_classes(sub)
    return found


def test_every_error_class_has_a_status_in_the_one_table() -> None:
    classes = all_error_classes()
    assert len(classes) > 20
    missing = [cls.__name__ for cls in classes if cls.code not in errors.HTTP_STATUS]
    assert missing == []


def test_codes_are_unique_per_class() -> None:
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes))


def test_statuses_follow_the_families() -> None:
    families = {
        errors.NotFound: 404,
        errors.Conflict: 409,
        errors.InvalidInput: 422,
        errors.Unavailable: 503,
        errors.BadRequest: 400,
    }
    for family, status in families.items():
        for cls in all_error_classes(family):
            assert errors.HTTP_STATUS[cls.code] == status, cls.__name__


def test_messages_name_the_thing() -> None:
    assert str(errors.VersionNotFound("churn", 7)) == "model 'churn' has no version 7"
    assert errors.AliasNotFound("churn", "prod").detail == {"model": "churn", "alias": "prod"}
