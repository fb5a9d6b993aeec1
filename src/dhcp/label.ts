/**
 * A DNS label for a DHCP reservation, from a VM's name (libvirt allows almost anything there:
 * `my_vm`, `Web Server`, `vm-ñandú`). The stored name stays what the caller gave; only the name
 * handed to dnsmasq must be a label: letters, digits and inner hyphens, 63 at most, lower case.
 */
export function dnsLabel(name: string): string | null {
  const label = name
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "") // accents off the letters they decorate: ñ → n
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-{2,}/g, "-")
    .slice(0, 63)
    .replace(/^-+|-+$/g, "");
  return label === "" ? null : label;
}
