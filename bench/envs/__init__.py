"""Environment kinds, registered explicitly: kind name -> class."""

from __future__ import annotations

from bench.envs.base import Environment
from bench.envs.cri import CriEnv
from bench.envs.docker import DockerEnv
from bench.envs.host import HostEnv
from bench.envs.k8s import K8sEnv
from bench.envs.libvirt import LibvirtEnv
from bench.envs.lxc import LxcEnv
from bench.envs.namespaces import NamespacesEnv
from bench.envs.oci import OciEnv
from bench.envs.podman import PodmanEnv
from bench.envs.qemu import QemuEnv
from bench.envs.swarm import SwarmEnv

REGISTRY: dict[str, type[Environment]] = {
    "host": HostEnv,
    "namespaces": NamespacesEnv,
    "docker": DockerEnv,
    "podman": PodmanEnv,
    "oci": OciEnv,
    "libvirt": LibvirtEnv,
    "qemu": QemuEnv,
    "cri": CriEnv,
    "k8s": K8sEnv,
    "lxc": LxcEnv,
    "swarm": SwarmEnv,
}
