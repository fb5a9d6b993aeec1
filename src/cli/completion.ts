/** `ippool completion bash`: a bash completion script for the executable's commands and options. */
import { COMMANDS } from "./client/commands.ts";

export function bashCompletion(): string {
  const top = [...new Set(COMMANDS.map((c) => c.name.split(" ")[0]))].concat([
    "serve",
    "fsck",
    "backup",
    "db",
    "completion",
  ]);
  const cases = COMMANDS.map((command) => {
    const options = [...command.options, ...(command.flags ?? []), "json", "socket", "url", "api-key", "project"];
    return `    "${command.name}") opts="${options.map((o) => `--${o}`).join(" ")}" ;;`;
  }).join("\n");
  const eip = COMMANDS.filter((c) => c.name.startsWith("eip ")).map((c) => c.name.slice(4));
  return `# bash completion for ippool; install: ippool completion bash > /etc/bash_completion.d/ippool
_ippool() {
  local cur=\${COMP_WORDS[COMP_CWORD]} cmd=\${COMP_WORDS[1]} opts=""
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${top.join(" ")} --help --version" -- "$cur")); return
  fi
  if [ "$cmd" = eip ]; then
    if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "${eip.join(" ")}" -- "$cur")); return; fi
    cmd="eip \${COMP_WORDS[2]}"
  fi
  case "$cmd" in
${cases}
    db) opts="migrate import --database-url" ;;
    serve|fsck|backup) opts="--config --port --listen --network --gateway --socket --data-dir --log-format --debug" ;;
  esac
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _ippool ippool
`;
}
