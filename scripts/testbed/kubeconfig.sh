# Sourced by kube-up.sh and node-up.sh: write_kubeconfig FILE SERVER CA USER CERT KEY writes a
# client-certificate kubeconfig (mode 0600, replaced atomically) for USER against SERVER.
write_kubeconfig() {
    local file=$1 server=$2 ca=$3 user=$4 cert=$5 key=$6
    local tmp=$file.tmp
    cat >"$tmp" <<EOF_KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$cert")
    client-key-data: $(base64 -w0 <"$key")
contexts:
- name: testbed
  context:
    cluster: testbed
    user: $user
current-context: testbed
EOF_KUBECONFIG
    chmod 600 "$tmp" && mv -f "$tmp" "$file"
}
