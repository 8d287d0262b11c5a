package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The bash script asks rekindle itself for the words that may follow
// (urfave/cli's --generate-bash-completion), so completion knows every
// command and flag of this very binary. zsh runs it through bashcompinit.
const bashCompletion = `# rekindle completion for bash: source it, or put it in /etc/bash_completion.d/rekindle
_rekindle() {
	local cur="${COMP_WORDS[COMP_CWORD]}"
	local args=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
	if [[ "$cur" == -* ]]; then
		args+=("$cur")
	fi
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${args[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F _rekindle rekindle
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name: "completion", Usage: "print a shell completion script (bash, zsh or fish)", ArgsUsage: "SHELL",
		Description: "Examples:\n  rekindle completion bash > /etc/bash_completion.d/rekindle\n  rekindle completion fish > ~/.config/fish/completions/rekindle.fish",
		Action: func(c *cli.Context) error {
			switch sh := c.Args().First(); sh {
			case "bash":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, "#compdef rekindle\nautoload -U +X bashcompinit && bashcompinit\n"+bashCompletion)
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				fmt.Fprint(c.App.Writer, s)
			default:
				return usageErr("completion: shell %q: want bash, zsh or fish", sh)
			}
			return nil
		},
	}
}
