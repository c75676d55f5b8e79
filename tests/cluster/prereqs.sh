# Sourced by up.sh: installs the few system tools the environment needs when a machine lacks them.
need_packages=()
for tool in curl:curl openssl:openssl setsid:util-linux; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_packages+=("${tool#*:}")
done
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "installing ${need_packages[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi
for tool in go cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required on PATH" >&2; exit 1; }
done
unset need_packages tool
