"""Mosquitto as deployed: a TLS listener, client certificates and ACLs from the registry.

    samsvar registry mosquitto registry.toml --out mqtt/ --make-ca \\
        --brokers broker-1,broker-2 --server-host mqtt.example.se

Every MQTT client authenticates with a client certificate issued by the federation's own
CA; Mosquitto takes the certificate's common name as the username
(``use_identity_as_username``) and the ACL file decides what that name may touch:

=================  ========================  =============================================
client             certificate CN            may
=================  ========================  =============================================
producer adapter   the producer id           read ``{prefix}/q/{id}`` (also as
                   (``SE2321000999-P001``);  ``$share/{id}/{prefix}/q/{id}``); write
                   every replica shares it   ``{prefix}/r/+``; read and write
                                             ``{prefix}/presence/{id}``; read
                                             ``{prefix}/checkpoint/+`` (it witnesses)
broker instance    ``broker:{instance}``     write ``{prefix}/q/+`` and
                   (``broker:broker-1``)     ``{prefix}/checkpoint/{instance}``; read
                                             ``{prefix}/r/{instance}`` and
                                             ``{prefix}/presence/+``
broker pool        ``broker:{pool}``         as a broker instance, but read every
                   (``broker:samsvar-        instance's replies ``{prefix}/r/+`` (and
                                             write ``{prefix}/checkpoint/+``): for
                   broker``)                 instances named at start (Kubernetes pods)
=================  ========================  =============================================

A pool (``--broker-pool NAME``) is for broker instances whose ids are not known in
advance, such as pods named by Kubernetes: they share one certificate, and each reads its
own reply topic under it. Every broker instance is the same operator with the same
signing key, so a pool member reading another's replies crosses no trust boundary; a
named instance still reads only its own.

A producer id can never hold a ``:`` (see :mod:`schemas.registry`), so no producer's
certificate can ever pass for a broker's. A certificate whose CN is in neither list
(a producer removed from the registry, say) may read and write nothing.

Two ways to enforce it:

* ``acl_file`` (the default): Mosquitto's built-in ACL file. It checks every publish and
  every delivery, but **never a SUBSCRIBE**: a producer's subscription to another's topic
  is granted and then receives nothing, yet by joining another producer's shared
  subscription group (``$share/{other}/...``) it takes that group's turn for some
  questions, and Mosquitto drops them instead of giving them to a real member: the other
  producer times out. Apply a registry change with ``SIGHUP``.
* ``--dynsec PLUGIN`` (recommended): Mosquitto's dynamic-security plugin with a
  ``dynamic-security.json`` generated from the same rules. It also refuses such
  subscriptions (SUBACK "not authorized"). Apply a registry change with a restart.

What ``--out DIR`` receives::

    DIR/mosquitto.conf             the listener, TLS and ACL settings
    DIR/acl                        generated from the registry; regenerate, don't edit
    DIR/dynamic-security.json      instead of DIR/acl with --dynsec
    DIR/ca.pem                     the CA certificate: every client needs it
    DIR/ca.key                     --make-ca only: move it offline after issuing (0600)
    DIR/server.pem, server.key     the MQTT server's certificate (SANs: --server-host)
    DIR/producers/{id}.pem, .key   one client certificate per producer (CN = producer id)
    DIR/brokers/{instance}.pem, .key   one per broker instance (CN = broker:{instance})
    DIR/brokers/{pool}.pem, .key       one per broker pool (CN = broker:{pool})

Existing certificates that the CA issued, with the right name and more than 30 days left,
are kept (so rerunning after a registry change only issues what is new); ``--reissue``
replaces them all. Private keys are written with mode 0600.

The package: :mod:`.acl` (the rules and ``mosquitto.conf``), :mod:`.pki` (the CA and
its certificates), :mod:`.files` (both into ``--out``), :mod:`.cli` (the command).
"""

from __future__ import annotations

from .acl import (
    BROKER_CN_PREFIX,
    acl_text,
    broker_cn,
    dynsec_config,
    mosquitto_conf,
    size_limits,
)
from .errors import MosquittoSetupError
from .files import DEFAULT_SERVER_HOSTS, Written, write_mosquitto_security
from .pki import CertificateAuthority

__all__ = [
    "BROKER_CN_PREFIX",
    "DEFAULT_SERVER_HOSTS",
    "CertificateAuthority",
    "MosquittoSetupError",
    "Written",
    "acl_text",
    "broker_cn",
    "dynsec_config",
    "mosquitto_conf",
    "size_limits",
    "write_mosquitto_security",
]
