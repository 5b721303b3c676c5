#!/usr/bin/env bash
# gen-pki.sh DIR: a throwaway test PKI for psd2edge (openssl CLI only). Never use it for
# anything real. Idempotent: when DIR already holds every file below it does nothing; otherwise
# it regenerates the whole set. EC P-256 keys (fast) except tpp-rsa (RSA 2048, to exercise the
# TLS 1.2 ECDHE-RSA suites).
#
# Files (certificates *.pem with their keys *.key):
#   tpp-ca.pem/.key      CA that issues TPP certificates (the gateway's tls.client_ca)
#   tpp.crl              CRL of tpp-ca revoking tpp-revoked (the gateway's tls.crl)
#   tpp1 tpp2 tpp3 tpp4  TPP client certificates (EC), valid now; tpp1-next is a second
#                        certificate for tpp1's organisation (rotation tests)
#   tpp-rsa              TPP client certificate with an RSA key
#   tpp-ai tpp-pi-ai     eIDAS PSD2 TPP certificates: an ETSI TS 119 495 PSD2 QCStatement with
#                        the roles PSP_AI, or PSP_PI and PSP_AI (NCA GB-FCA), and a subject
#                        organizationIdentifier (PSDGB-FCA-000101, PSDGB-FCA-000102)
#   tpp-qc-mislabelled   a PSD2 QCStatement whose role OID says PSP_PI and name PSP_AI
#   tpp-expired          TPP client certificate that expired in 2021
#   tpp-revoked          TPP client certificate listed in tpp.crl
#   untrusted-ca         a CA the gateway does not trust; untrusted = client cert it issued
#   bank-ca.pem/.key     the bank's CA: issues the gateway's server certificate, the upstream's
#                        server certificate and the gateway's QWAC client certificate
#   server               gateway server cert: DNS:gateway.test, DNS:localhost, IP:10.77.0.1,
#                        IP:127.0.0.1
#   upstream             upstream (bank API) server cert: DNS:upstream.test, DNS:localhost,
#                        IP:127.0.0.1, IP:10.77.1.2
#   gateway-qwac         client certificate the gateway presents to an https upstream
#   bundle-all-tpp-ca.pem  tpp-ca + untrusted-ca (a bundle, for tests that need both)
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
DIR=$1

FILES=(tpp-ca.pem tpp-ca.key tpp.crl
	tpp1.pem tpp1.key tpp2.pem tpp2.key tpp3.pem tpp3.key tpp4.pem tpp4.key
	tpp1-next.pem tpp1-next.key tpp-rsa.pem tpp-rsa.key
	tpp-ai.pem tpp-ai.key tpp-pi-ai.pem tpp-pi-ai.key tpp-qc-mislabelled.pem tpp-qc-mislabelled.key
	tpp-expired.pem tpp-expired.key tpp-revoked.pem tpp-revoked.key
	untrusted-ca.pem untrusted-ca.key untrusted.pem untrusted.key
	bank-ca.pem bank-ca.key server.pem server.key upstream.pem upstream.key
	gateway-qwac.pem gateway-qwac.key bundle-all-tpp-ca.pem)

complete() {
	local f
	for f in "${FILES[@]}"; do
		[ -s "$DIR/$f" ] || return 1
	done
}
complete && exit 0

mkdir -p "$DIR"
# Two runs generating into the same DIR at once would mix keys and certificates: serialise,
# and look again once we hold the lock.
exec 9>"$DIR/.gen-pki.lock"
flock 9
complete && exit 0
DIR=$(cd "$DIR" && pwd)
WORK=$(mktemp -d "$DIR/.gen-pki.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# One openssl config for the three CAs ("openssl ca" keeps the database a CRL needs and lets
# us set explicit validity dates for the expired certificate).
cat >"$WORK/openssl.cnf" <<'EOF'
[ ca ]
default_ca = tpp

[ ca_common ]
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
default_days = 825
default_crl_days = 3650

[ tpp ]
dir = $ENV::WORK/tpp-ca
database = $dir/index.txt
serial = $dir/serial
crlnumber = $dir/crlnumber
new_certs_dir = $dir/new
certificate = $ENV::WORK/tpp-ca.pem
private_key = $ENV::WORK/tpp-ca.key
default_md = sha256
policy = policy_any
unique_subject = no
default_days = 825
default_crl_days = 3650

[ untrusted ]
dir = $ENV::WORK/untrusted-ca
database = $dir/index.txt
serial = $dir/serial
crlnumber = $dir/crlnumber
new_certs_dir = $dir/new
certificate = $ENV::WORK/untrusted-ca.pem
private_key = $ENV::WORK/untrusted-ca.key
default_md = sha256
policy = policy_any
unique_subject = no
default_days = 825

[ bank ]
dir = $ENV::WORK/bank-ca
database = $dir/index.txt
serial = $dir/serial
crlnumber = $dir/crlnumber
new_certs_dir = $dir/new
certificate = $ENV::WORK/bank-ca.pem
private_key = $ENV::WORK/bank-ca.key
default_md = sha256
policy = policy_any
unique_subject = no
default_days = 825

[ policy_any ]
countryName = optional
organizationName = optional
organizationalUnitName = optional
organizationIdentifier = optional
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no
[ req_dn ]
CN = placeholder

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

# A client certificate with the qcStatements extension (1.3.6.1.5.5.7.1.3) of section $QC.
[ client_psd2 ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
1.3.6.1.5.5.7.1.3 = ASN1:SEQUENCE:$ENV::QC

# ETSI TS 119 495: QCStatement { id-etsi-psd2-qcStatement (0.4.0.19495.2), PSD2QcType {
# rolesOfPSP SEQUENCE OF { roleOfPspOid, roleOfPspName }, nCAName, nCAId } }
[ qc_ai ]
psd2 = SEQUENCE:psd2_ai
[ psd2_ai ]
id = OID:0.4.0.19495.2
info = SEQUENCE:psd2_ai_type
[ psd2_ai_type ]
roles = SEQUENCE:roles_ai
nca_name = UTF8:Financial Conduct Authority
nca_id = UTF8:GB-FCA
[ roles_ai ]
ai = SEQUENCE:role_ai

[ qc_pi_ai ]
psd2 = SEQUENCE:psd2_pi_ai
[ psd2_pi_ai ]
id = OID:0.4.0.19495.2
info = SEQUENCE:psd2_pi_ai_type
[ psd2_pi_ai_type ]
roles = SEQUENCE:roles_pi_ai
nca_name = UTF8:Financial Conduct Authority
nca_id = UTF8:GB-FCA
[ roles_pi_ai ]
pi = SEQUENCE:role_pi
ai = SEQUENCE:role_ai

[ qc_mislabelled ]
psd2 = SEQUENCE:psd2_mislabelled
[ psd2_mislabelled ]
id = OID:0.4.0.19495.2
info = SEQUENCE:psd2_mislabelled_type
[ psd2_mislabelled_type ]
roles = SEQUENCE:roles_mislabelled
nca_name = UTF8:Financial Conduct Authority
nca_id = UTF8:GB-FCA
[ roles_mislabelled ]
pi = SEQUENCE:role_pi_named_ai

[ role_pi ]
oid = OID:0.4.0.19495.1.2
name = UTF8:PSP_PI
[ role_ai ]
oid = OID:0.4.0.19495.1.3
name = UTF8:PSP_AI
[ role_pi_named_ai ]
oid = OID:0.4.0.19495.1.2
name = UTF8:PSP_AI

[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $ENV::SAN
EOF
export WORK
export SAN=DNS:placeholder QC=qc_ai
CNF=$WORK/openssl.cnf

gen_key() { # NAME [rsa]
	if [ "${2:-}" = rsa ]; then
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/$1.key" 2>/dev/null
	else
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key"
	fi
	chmod 600 "$WORK/$1.key"
}

make_ca() { # NAME SECTION SUBJECT
	gen_key "$1"
	openssl req -config "$CNF" -new -x509 -key "$WORK/$1.key" -out "$WORK/$1.pem" \
		-days 3650 -subj "$3" -extensions v3_ca -sha256
	mkdir -p "$WORK/$2-ca/new"
	: >"$WORK/$2-ca/index.txt"
	openssl rand -hex 16 >"$WORK/$2-ca/serial"
	echo 1000 >"$WORK/$2-ca/crlnumber"
}

# issue CA_SECTION NAME SUBJECT PROFILE [STARTDATE ENDDATE] [rsa]
issue() {
	local ca=$1 name=$2 subj=$3 profile=$4 start=${5:-} end=${6:-} keytype=${7:-}
	local dates=()
	gen_key "$name" "$keytype"
	openssl req -config "$CNF" -new -key "$WORK/$name.key" -subj "$subj" -out "$WORK/$name.csr"
	if [ -n "$start" ]; then
		dates=(-startdate "$start" -enddate "$end")
	fi
	openssl ca -config "$CNF" -name "$ca" -batch -notext -extensions "$profile" \
		"${dates[@]}" -in "$WORK/$name.csr" -out "$WORK/$name.pem" 2>"$WORK/ca.log" ||
		{ cat "$WORK/ca.log" >&2; return 1; }
	rm -f "$WORK/$name.csr"
}

make_ca tpp-ca tpp "/C=EU/O=psd2edge test QTSP/CN=psd2edge Test TPP CA"
make_ca untrusted-ca untrusted "/C=EU/O=Nobody/CN=Untrusted Test CA"
make_ca bank-ca bank "/C=EU/O=psd2edge test bank/CN=psd2edge Test Bank CA"

issue tpp tpp1 "/C=EU/O=TPP One/OU=PSDEU-TEST-0001/CN=tpp1.test" client
issue tpp tpp1-next "/C=EU/O=TPP One/OU=PSDEU-TEST-0001/CN=tpp1-next.test" client
issue tpp tpp2 "/C=EU/O=TPP Two/OU=PSDEU-TEST-0002/CN=tpp2.test" client
issue tpp tpp3 "/C=EU/O=TPP Three/OU=PSDEU-TEST-0003/CN=tpp3.test" client
issue tpp tpp4 "/C=EU/O=TPP Four/OU=PSDEU-TEST-0004/CN=tpp4.test" client
issue tpp tpp-rsa "/C=EU/O=TPP RSA/OU=PSDEU-TEST-0005/CN=tpp-rsa.test" client "" "" rsa
QC=qc_ai issue tpp tpp-ai \
	"/C=GB/O=TPP AI/organizationIdentifier=PSDGB-FCA-000101/CN=tpp-ai.test" client_psd2
QC=qc_pi_ai issue tpp tpp-pi-ai \
	"/C=GB/O=TPP PI AI/organizationIdentifier=PSDGB-FCA-000102/CN=tpp-pi-ai.test" client_psd2
QC=qc_mislabelled issue tpp tpp-qc-mislabelled \
	"/C=GB/O=TPP Mislabelled/organizationIdentifier=PSDGB-FCA-000103/CN=tpp-qc.test" client_psd2
issue tpp tpp-expired "/C=EU/O=TPP Expired/CN=tpp-expired.test" client \
	20200101000000Z 20210101000000Z
issue tpp tpp-revoked "/C=EU/O=TPP Revoked/CN=tpp-revoked.test" client
openssl ca -config "$CNF" -name tpp -batch -revoke "$WORK/tpp-revoked.pem" \
	-crl_reason keyCompromise 2>"$WORK/ca.log" || { cat "$WORK/ca.log" >&2; exit 1; }
openssl ca -config "$CNF" -name tpp -batch -gencrl -crldays 3650 -out "$WORK/tpp.crl" \
	2>"$WORK/ca.log" || { cat "$WORK/ca.log" >&2; exit 1; }

issue untrusted untrusted "/C=EU/O=Nobody/CN=untrusted.test" client

SAN="DNS:gateway.test,DNS:localhost,IP:10.77.0.1,IP:127.0.0.1" \
	issue bank server "/C=EU/O=psd2edge test bank/CN=gateway.test" server
SAN="DNS:upstream.test,DNS:localhost,IP:127.0.0.1,IP:10.77.1.2" \
	issue bank upstream "/C=EU/O=psd2edge test bank/CN=upstream.test" server
issue bank gateway-qwac "/C=EU/O=psd2edge test bank/OU=PSDEU-BANK-0001/CN=gateway-qwac.test" client

cat "$WORK/tpp-ca.pem" "$WORK/untrusted-ca.pem" >"$WORK/bundle-all-tpp-ca.pem"

for f in "${FILES[@]}"; do
	mv -f "$WORK/$f" "$DIR/$f"
done
echo "gen-pki: test PKI written to $DIR"
