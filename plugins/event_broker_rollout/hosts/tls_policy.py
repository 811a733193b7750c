"""The TLS this project accepts: the cipher suites its servers offer, and the keys and signatures its
certificates may carry. Templates render the suites; preflight holds provided certificates to the rest.
"""

from __future__ import annotations

# TLS 1.2: forward secrecy (ECDHE) and authenticated encryption (GCM, ChaCha20-Poly1305) only. ECDSA
# first: the internal CA issues P-256 keys; RSA suites serve an organisation's RSA certificates.
TLS12_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
# Java applies one enabled-suite list to every protocol version: without these, TLS 1.3 would stop working.
TLS13_CIPHER_SUITES = ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256")
# Java (JSSE) names, as Kafka's ssl.cipher.suites and Quarkus's quarkus.http.ssl.cipher-suites take them.
SERVER_CIPHER_SUITES = (*TLS13_CIPHER_SUITES, *TLS12_CIPHER_SUITES)

# What a TLS 1.2 client offers to prove a server refuses everything else: every suite but ECDHE with
# AEAD (OpenSSL names; PSK and SRP suites left out, as Java servers offer neither).
OUTSIDE_POLICY_TLS12_PROBE = (
    "ALL:!ECDHE+AESGCM:!ECDHE+CHACHA20:!ECDHE+AESCCM:!ECDHE+ARIAGCM:!PSK:!SRP:!aNULL:!eNULL:@SECLEVEL=0"
)

MIN_RSA_BITS = 2048
# Named curves Java's TLS stack signs with, P-256 and stronger.
ACCEPTED_EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")
# Signature hashes with practical collision attacks: a certificate signed with one can be forged.
WEAK_SIGNATURE_HASHES = ("md5", "sha1")
