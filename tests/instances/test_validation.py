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
        ({"runtime": "docker", "container_name": "c1", "run_spec": {"volumes": ["/:/host:ro"]}}, "run_spec"),
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
def test_good_specs_pass(settings):
    settings.CONSOLE_BIND_SOURCES = ["/models"]
    _instance(command=["python", "-m", "inference.server"], gpu_indices=[0, 1]).full_clean()
    _instance(
        name="gpu-a-2",
        runtime="docker",
        container_name="glm-a-2",
        image="glm:latest",
        run_spec={"volumes": ["/models:/models:ro"], "environment": {"A": "1"}},
    ).full_clean()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "spec, message",
    [
        ({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}, "Docker socket"),
        ({"volumes": ["/var/run:/run-host:ro"]}, "Docker socket"),
        ({"volumes": ["/etc:/host-etc:ro"]}, "outside the allowed bind sources"),
        ({"volumes": ["/srv/models/../../etc:/m:ro"]}, "climb out"),
        ({"volumes": ["/srv/models:/models"]}, "read-only"),
        ({"user": "root"}, "other than root"),
        ({"user": "0:0"}, "other than root"),
        ({"network_mode": "host"}, "not allowed on this deployment"),
        ({"network_mode": "container:console"}, "not allowed on this deployment"),
    ],
)
def test_a_spec_that_would_reach_the_host_is_refused(settings, spec, message):
    settings.CONSOLE_BIND_SOURCES, settings.CONSOLE_NETWORK_MODES = ["/srv/models"], []
    instance = _instance(runtime="docker", container_name="c1", image="glm:latest", run_spec=spec)
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    assert message in " ".join(caught.value.message_dict["run_spec"])


@pytest.mark.django_db
def test_the_deployment_s_own_sources_and_networks_pass(settings):
    settings.CONSOLE_BIND_SOURCES, settings.CONSOLE_NETWORK_MODES = ["/srv/models"], ["host"]
    spec = {"volumes": ["/srv/models/glm:/models:ro", "cache:/cache"], "network_mode": "host", "user": "1000"}
    _instance(runtime="docker", container_name="c1", image="glm:latest", run_spec=spec).full_clean()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url, good",
    [
        ("http://glm-a-1:8080", True),  # a compose service: one name, no domain
        ("http://127.0.0.1:8080", True),
        ("https://gpu-a.example.org/v1", True),
        ("ftp://glm-a-1:8080", False),
        ("http://user:pw@glm-a-1:8080", False),
        ("http://glm_a:8080", False),
        ("http://glm-a-1:99999", False),
        ("glm-a-1:8080", False),
    ],
)
def test_server_urls_may_name_a_service(url, good):
    instance = _instance(command=["x"], base_url=url)
    if good:
        instance.full_clean()
    else:
        with pytest.raises(ValidationError) as caught:
            instance.full_clean()
        assert "base_url" in caught.value.message_dict
