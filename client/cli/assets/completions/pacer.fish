# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pacer_global_optspecs
    string join \n socket= h/help V/version
end

function __fish_pacer_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pacer_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pacer_using_subcommand
    set -l cmd (__fish_pacer_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pacer -n "__fish_pacer_needs_command" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_needs_command" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_needs_command" -s V -l version -d 'Print version'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "run" -d 'Run a command (such as `claude`) with ANTHROPIC_BASE_URL pointing at pacerd\'s gateway, starting pacerd first if it is not running'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "env" -d 'Print the `export ANTHROPIC_BASE_URL=…` line for a shell'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "probe" -d 'Make one minimal API call and show the key\'s rate limits from its headers'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "status" -d 'Show every budget: limits, what is available now, calls in flight and waiting, pauses'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "acquire" -d 'Wait for a permit for one API call and print its lease id (for shell scripts)'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "report" -d 'Report how a call made under a lease went'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "release" -d 'Give a lease back unused: everything it reserved is refunded'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "pause" -d 'Pause a budget for everyone (`--for 0` lifts a pause)'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "watch" -d 'Print the daemon\'s events as they happen: grants, pauses, limits learned'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "top" -d 'A live full-screen view: budgets, pauses, windows, clients, events (q quits)'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "key-id" -d 'Print the fingerprint of an API key, as the configuration and status show it'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "service" -d 'Run pacerd as a user service (systemd on Linux, launchd on macOS)'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "statusline" -d 'Print one short line for Claude Code\'s status bar (its `statusLine` setting): this session\'s account, its windows, pauses and what is held. `--install` sets it up'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "hook" -d 'Answer one of Claude Code\'s hooks (its JSON on stdin): a line of context when this session\'s account crosses 75 % or 90 % of a window, a question before a subagent past 90 %. `--install` sets both up'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "mcp" -d 'Serve MCP over stdio, for `claude mcp add pacer -- pacer mcp`: tools that tell an agent its account\'s windows, whether a fan-out fits, and what is held. `--install` registers it'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "completions" -d 'Print the completion script for a shell (bash, zsh, fish, elvish, powershell)'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "man" -d 'Write the man pages (pacer.1, one per subcommand, pacerd.1) into DIR/man1/, where `MANPATH=DIR man pacer-status` finds them (~/.local/share/man is on man\'s default path)'
complete -c pacer -n "__fish_pacer_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pacer -n "__fish_pacer_using_subcommand run" -l priority -d 'interactive, normal or batch: who goes first when the budget is spent, and how far it may bring a subscription\'s windows [default: interactive when started from a terminal, normal otherwise (cron, a script)]' -r
complete -c pacer -n "__fish_pacer_using_subcommand run" -l name -d 'The client name requests are queued under [default: the command\'s name and pacer\'s pid]' -r
complete -c pacer -n "__fish_pacer_using_subcommand run" -l max-share -d 'Cap the command\'s use of each subscription window at this share of it, per window (10%, 2.5%, 0.1): past it, its calls are held until the window resets while other clients go on' -r
complete -c pacer -n "__fish_pacer_using_subcommand run" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand run" -l strict -d 'Refuse to run a command whose calls would bypass pacer (Bedrock, Vertex)'
complete -c pacer -n "__fish_pacer_using_subcommand run" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand env" -l priority -d 'interactive, normal or batch' -r
complete -c pacer -n "__fish_pacer_using_subcommand env" -l name -d 'The client name requests are queued under [default: shell-<parent pid>]' -r
complete -c pacer -n "__fish_pacer_using_subcommand env" -l max-share -d 'Cap the shell\'s use of each subscription window at this share of it, per window (10%, 0.1)' -r
complete -c pacer -n "__fish_pacer_using_subcommand env" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand env" -l strict -d 'Refuse when the shell\'s calls would bypass pacer (Bedrock, Vertex)'
complete -c pacer -n "__fish_pacer_using_subcommand env" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand probe" -l model -d 'The model to ask (its class\'s limits are shown)' -r
complete -c pacer -n "__fish_pacer_using_subcommand probe" -l upstream -d 'The API to probe directly (under a permit) [default: through pacerd\'s gateway, to the upstream pacerd is configured with; without a gateway, https://api.anthropic.com]' -r
complete -c pacer -n "__fish_pacer_using_subcommand probe" -l api-key-env -d 'The environment variable holding the API key' -r
complete -c pacer -n "__fish_pacer_using_subcommand probe" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand probe" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand status" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand status" -l json -d 'Print JSON instead of a table'
complete -c pacer -n "__fish_pacer_using_subcommand status" -l clients -d 'Also list the clients seen in the last 10 minutes (always in --json)'
complete -c pacer -n "__fish_pacer_using_subcommand status" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l model -d 'The model the call will use (its class selects the budget)' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l input-tokens -d 'Estimated input tokens of the call' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l output-tokens -d 'Estimated output tokens of the call' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l max-tokens -d 'The call\'s max_tokens (caps the output estimate)' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l priority -d 'interactive, normal or batch' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l timeout -d 'Give up after waiting this long (seconds, or 30s, 2m…); exit status 2' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l ttl -d 'Settle the permit as "unknown outcome" if not reported within this long' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l client-id -d 'Identity for fair turns between clients [default: pacer-<parent pid>]' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l max-share -d 'Cap this client\'s use of each subscription window at this share of it, per window (10%, 0.1): past it, the acquire waits (or times out) until the window resets' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l api-key-env -d 'The environment variable holding the API key' -r
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -l fail-closed -d 'Exit with an error if pacerd is unreachable, instead of printing lease 0 (unpaced)'
complete -c pacer -n "__fish_pacer_using_subcommand acquire" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand report" -l status -d 'The call\'s HTTP status [default: the status line of --headers-file]' -r
complete -c pacer -n "__fish_pacer_using_subcommand report" -l retry-after -d 'The retry-after of a 429 or 529 (seconds, or 30s, 2m…) [default: from the headers]' -r
complete -c pacer -n "__fish_pacer_using_subcommand report" -l input-tokens -d 'Input tokens the call used [default: from --body-file]' -r
complete -c pacer -n "__fish_pacer_using_subcommand report" -l output-tokens -d 'Output tokens the call used [default: from --body-file]' -r
complete -c pacer -n "__fish_pacer_using_subcommand report" -l cache-creation-tokens -d 'Cache-write input tokens the call used (they count toward the input limit)' -r
complete -c pacer -n "__fish_pacer_using_subcommand report" -l headers-file -d 'Response headers as `name: value` lines, as `curl -D FILE` writes them' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand report" -l body-file -d 'The JSON response body, for its `usage` (or its error message, on a 429)' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand report" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand report" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand release" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand release" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand pause" -l model -d 'A model name or model class (opus, sonnet, haiku…)' -r
complete -c pacer -n "__fish_pacer_using_subcommand pause" -l for -d 'How long (seconds, or 30s, 2m…); 0 lifts the pause' -r
complete -c pacer -n "__fish_pacer_using_subcommand pause" -l api-key-env -d 'The environment variable holding the API key' -r
complete -c pacer -n "__fish_pacer_using_subcommand pause" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand pause" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand watch" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand watch" -l json -d 'Print one JSON object per line (every event, grants included)'
complete -c pacer -n "__fish_pacer_using_subcommand watch" -l grants -d 'Also print a line when each permit is granted (each call\'s outcome is always shown)'
complete -c pacer -n "__fish_pacer_using_subcommand watch" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand top" -l refresh -d 'How often the status is read (seconds, or 500ms, 2s…)' -r
complete -c pacer -n "__fish_pacer_using_subcommand top" -l size -d 'The size of the `--once` frame, COLSxROWS [default: the terminal\'s, else 100x30]' -r
complete -c pacer -n "__fish_pacer_using_subcommand top" -l after -d 'With --once: watch this long first (the sparklines\' history, the events), then print' -r
complete -c pacer -n "__fish_pacer_using_subcommand top" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand top" -l once -d 'Print one frame as text and exit (no terminal needed)'
complete -c pacer -n "__fish_pacer_using_subcommand top" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand key-id" -l api-key-env -d 'The environment variable holding the API key' -r
complete -c pacer -n "__fish_pacer_using_subcommand key-id" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand key-id" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand service; and not __fish_seen_subcommand_from install uninstall status help" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand service; and not __fish_seen_subcommand_from install uninstall status help" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand service; and not __fish_seen_subcommand_from install uninstall status help" -f -a "install" -d 'Write the unit files (or LaunchAgent) for this user, pointing at this pacerd, and enable them with systemctl / launchctl when available (else print the commands)'
complete -c pacer -n "__fish_pacer_using_subcommand service; and not __fish_seen_subcommand_from install uninstall status help" -f -a "uninstall" -d 'Stop and disable the service, and remove its files'
complete -c pacer -n "__fish_pacer_using_subcommand service; and not __fish_seen_subcommand_from install uninstall status help" -f -a "status" -d 'Show whether the service is installed and running'
complete -c pacer -n "__fish_pacer_using_subcommand service; and not __fish_seen_subcommand_from install uninstall status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from install" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from install" -l no-start -d 'Only write the files'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from install" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from uninstall" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from uninstall" -l no-stop -d 'Only remove the files'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from uninstall" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from status" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "install" -d 'Write the unit files (or LaunchAgent) for this user, pointing at this pacerd, and enable them with systemctl / launchctl when available (else print the commands)'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "uninstall" -d 'Stop and disable the service, and remove its files'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show whether the service is installed and running'
complete -c pacer -n "__fish_pacer_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pacer -n "__fish_pacer_using_subcommand statusline" -l settings -d 'The settings file to install into [default: ~/.claude/settings.json]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand statusline" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand statusline" -l install -d 'Write the `statusLine` setting into Claude Code\'s settings (keeping the rest, after a backup) instead of printing a line'
complete -c pacer -n "__fish_pacer_using_subcommand statusline" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand hook" -l thresholds -d 'The window shares (percent) at which a turn is told, once per crossing' -r
complete -c pacer -n "__fish_pacer_using_subcommand hook" -l ask-at -d 'Past this share (percent) of a window, starting a subagent is asked about first' -r
complete -c pacer -n "__fish_pacer_using_subcommand hook" -l decision -d 'What to answer about a subagent past --ask-at: ask the person, or deny it outright' -r -f -a "ask\t''
deny\t''"
complete -c pacer -n "__fish_pacer_using_subcommand hook" -l settings -d 'The settings file to install into [default: ~/.claude/settings.json]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand hook" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand hook" -l install -d 'Write the hooks into Claude Code\'s settings (keeping the rest, after a backup) instead of answering one'
complete -c pacer -n "__fish_pacer_using_subcommand hook" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand mcp" -l config -d 'The file to install into [default: ~/.claude.json]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand mcp" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand mcp" -l install -d 'Register `pacer mcp` in Claude Code\'s user settings (`mcpServers` in ~/.claude.json, after a backup) instead of serving, as `claude mcp add --scope user pacer -- pacer mcp` would'
complete -c pacer -n "__fish_pacer_using_subcommand mcp" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand completions" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand completions" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand man" -l socket -d 'pacerd\'s socket [default: $XDG_RUNTIME_DIR/pacer/pacer.sock, else a private directory under the temp dir]' -r -F
complete -c pacer -n "__fish_pacer_using_subcommand man" -s h -l help -d 'Print help'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "run" -d 'Run a command (such as `claude`) with ANTHROPIC_BASE_URL pointing at pacerd\'s gateway, starting pacerd first if it is not running'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "env" -d 'Print the `export ANTHROPIC_BASE_URL=…` line for a shell'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "probe" -d 'Make one minimal API call and show the key\'s rate limits from its headers'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "status" -d 'Show every budget: limits, what is available now, calls in flight and waiting, pauses'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "acquire" -d 'Wait for a permit for one API call and print its lease id (for shell scripts)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "report" -d 'Report how a call made under a lease went'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "release" -d 'Give a lease back unused: everything it reserved is refunded'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "pause" -d 'Pause a budget for everyone (`--for 0` lifts a pause)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "watch" -d 'Print the daemon\'s events as they happen: grants, pauses, limits learned'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "top" -d 'A live full-screen view: budgets, pauses, windows, clients, events (q quits)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "key-id" -d 'Print the fingerprint of an API key, as the configuration and status show it'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "service" -d 'Run pacerd as a user service (systemd on Linux, launchd on macOS)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "statusline" -d 'Print one short line for Claude Code\'s status bar (its `statusLine` setting): this session\'s account, its windows, pauses and what is held. `--install` sets it up'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "hook" -d 'Answer one of Claude Code\'s hooks (its JSON on stdin): a line of context when this session\'s account crosses 75 % or 90 % of a window, a question before a subagent past 90 %. `--install` sets both up'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "mcp" -d 'Serve MCP over stdio, for `claude mcp add pacer -- pacer mcp`: tools that tell an agent its account\'s windows, whether a fan-out fits, and what is held. `--install` registers it'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "completions" -d 'Print the completion script for a shell (bash, zsh, fish, elvish, powershell)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "man" -d 'Write the man pages (pacer.1, one per subcommand, pacerd.1) into DIR/man1/, where `MANPATH=DIR man pacer-status` finds them (~/.local/share/man is on man\'s default path)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and not __fish_seen_subcommand_from run env probe status acquire report release pause watch top key-id service statusline hook mcp completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "install" -d 'Write the unit files (or LaunchAgent) for this user, pointing at this pacerd, and enable them with systemctl / launchctl when available (else print the commands)'
complete -c pacer -n "__fish_pacer_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "uninstall" -d 'Stop and disable the service, and remove its files'
complete -c pacer -n "__fish_pacer_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "status" -d 'Show whether the service is installed and running'
