#!/usr/bin/env python3
"""AES-128-GCM throughput of the kernel's crypto API (what kTLS uses, via AF_ALG) next to
userspace OpenSSL (`openssl speed`), 16 KiB operations (one full TLS record). Run inside the
vmtest VM to see how TCG's emulation weighs on each: vmtest/run.sh -- bench/ktls_cryptospeed.py"""
import re, socket, subprocess, time

SIZE, SECONDS = 16384, 3.0

def kernel_gcm():
    s = socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0)
    s.bind(("aead", "gcm(aes)"))
    s.setsockopt(socket.SOL_ALG, socket.ALG_SET_KEY, b"k" * 16)
    s.setsockopt(socket.SOL_ALG, socket.ALG_SET_AEAD_AUTHSIZE, None, 16)
    op, _ = s.accept()
    data, n, t0 = b"x" * SIZE, 0, time.monotonic()
    while time.monotonic() - t0 < SECONDS:
        op.sendmsg_afalg([data], op=socket.ALG_OP_ENCRYPT, iv=b"\0" * 12, assoclen=0)
        op.recv(SIZE + 16)
        n += 1
    return n * SIZE / (time.monotonic() - t0) / 2**20

def driver():
    text = open("/proc/crypto").read()
    for block in text.split("\n\n"):
        if re.search(r"^name\s*: gcm\(aes\)$", block, re.M):
            return re.search(r"^driver\s*: (.*)$", block, re.M).group(1)
    return "?"

def openssl_gcm():
    out = subprocess.run(["openssl", "speed", "-evp", "aes-128-gcm", "-bytes", str(SIZE),
                          "-seconds", str(int(SECONDS))], capture_output=True, text=True).stdout
    last = out.strip().splitlines()[-1].split()
    return float(last[-1].rstrip("k")) * 1000 / 2**20

k = kernel_gcm()
print(f"kernel gcm(aes) [{driver()}] via AF_ALG, 16 KiB ops: {k:.1f} MiB/s")
u = openssl_gcm()
print(f"OpenSSL EVP aes-128-gcm, 16 KiB ops:               {u:.1f} MiB/s")
print(f"userspace/kernel crypto speed: {u / k:.2f}x")
