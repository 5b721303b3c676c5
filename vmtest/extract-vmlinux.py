#!/usr/bin/env python3
"""Extracts the uncompressed ELF kernel (vmlinux) from a bzImage (vmlinuz), so that QEMU can
boot it through its PVH entry point. Usage: extract-vmlinux.py VMLINUZ OUTPUT
Exit 1 when the image has no payload it can decompress or the result has no PVH note."""
import bz2, gzip, lzma, os, subprocess, sys, tempfile, zlib

src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()

def candidates():
    for magic, fn in ((b"\xfd7zXZ\x00", lambda d: lzma.LZMADecompressor().decompress(d)),
                      (b"\x28\xb5\x2f\xfd", None),  # zstd: through the zstd tool
                      (b"\x1f\x8b\x08", lambda d: zlib.decompressobj(31).decompress(d)),
                      (b"BZh", lambda d: bz2.BZ2Decompressor().decompress(d))):
        i = data.find(magic)
        while i >= 0:
            yield i, magic, fn
            i = data.find(magic, i + 1)

for off, magic, fn in candidates():
    try:
        if fn is None:
            out = subprocess.run(["zstd", "-dc"], input=data[off:], capture_output=True).stdout
        else:
            out = fn(data[off:])
    except Exception:
        continue
    if out[:4] == b"\x7fELF":
        break
else:
    sys.exit("extract-vmlinux: no ELF payload in %s" % src)

fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)))
with os.fdopen(fd, "wb") as f:
    f.write(out)
notes = subprocess.run(["readelf", "-n", tmp], capture_output=True, text=True).stdout
if "Xen" not in notes or "0x00000012" not in notes:  # XEN_ELFNOTE_PHYS32_ENTRY
    os.unlink(tmp)
    sys.exit("extract-vmlinux: %s has no PVH entry note" % src)
os.replace(tmp, dst)
