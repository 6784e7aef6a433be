"""Instances with bad specs are refused with the field that is wrong."""

import pytest
from django.core.exceptions import ValidationError

from console.instances.models import Instance
from tests.factories import host


def _instance(**fields) -> Instance:
    base = {"name": "gpu-a-1", "host": host(), "base_url": "http://127.0.0.1:8080"}
    base.update(fields)
    return Instance(**base)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": "Bad Name!", "command": ["x"]}, "name"),
        ({"name": "../etc", "command": ["x"]}, "name"),
        ({"runtime": "process", "command": "python -m app"}, "command"),
        ({"runtime": "process", "command": []}, "command"),
        ({"runtime": "docker", "container_name": ""}, "container_name"),
        ({"runtime": "docker", "container_name": "bad/name"}, "container_name"),
        ({"runtime": "docker", "container_name": "c1", "run_spec": {"privileged": True}}, "run_spec"),
        ({"runtime": "docker", "container_name": "c1", "run_spec": {"volumes": "/:/host"}}, "run_spec"),
        ({"command": ["x"], "env": {"A": 1}}, "env"),
        ({"command": ["x"], "gpu_indices": ["0"]}, "gpu_indices"),
        ({"command": ["x"], "drain_timeout": 0}, "drain_timeout"),
        ({"command": ["x"], "base_url": "not a url"}, "base_url"),
    ],
)
def test_bad_instance_spec_names_the_field(fields, field):
    with pytest.raises(ValidationError) as caught:
        _instance(**fields).full_clean()
    assert field in caught.value.message_dict


@pytest.mark.django_db
def test_good_specs_pass():
    _instance(command=["python", "-m", "inference.server"], gpu_indices=[0, 1]).full_clean()
    _instance(
        name="gpu-a-2",
        runtime="docker",
        container_name="glm-a-2",
        image="glm:latest",
        run_spec={"volumes": ["/models:/models:ro"], "environment": {"A": "1"}},
    ).full_clean()
