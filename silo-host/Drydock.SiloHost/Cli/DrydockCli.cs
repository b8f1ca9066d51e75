using System.CommandLine;
using System.CommandLine.Parsing;
using System.Reflection;
using Drydock.SiloHost.Cli.Nbd;

namespace Drydock.SiloHost.Cli;

/// <summary>The <c>drydock</c> command tree.</summary>
public static class DrydockCli
{
    /// <summary>Builds the root command.</summary>
    /// <returns>The root command with every subcommand attached.</returns>
    public static RootCommand Build() => Build(null);

    /// <summary>Builds the root command with the hypervisor drivers given (tests add simulated ones).</summary>
    /// <param name="connectors">Creates the driver registry on first use; null for the real drivers under /var/lib/drydock.</param>
    /// <returns>The root command.</returns>
    internal static RootCommand Build(Func<HypervisorConnectors>? connectors)
    {
        connectors ??= () => HypervisorConnectors.CreateDefault(Environment.GetEnvironmentVariable("DRYDOCK_WORK_DIR") is { Length: > 0 } work ? work : "/var/lib/drydock");
        var root = new RootCommand("Drydock: backup and restore for libvirt/QEMU and Virtuozzo fleets.");
        var version = new Command("version", "Print the version.");
        version.SetAction(parse =>
        {
            var informational = typeof(DrydockCli).Assembly
                .GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
            parse.InvocationConfiguration.Output.WriteLine($"drydock {informational}");
            return 0;
        });
        root.Subcommands.Add(version);
        root.Subcommands.Add(NbdCommands.Build());
        root.Subcommands.Add(DemoCommand.Build());
        root.Subcommands.Add(RepoCommands.Build());
        foreach (var command in BackupCommands.Build(connectors))
        {
            root.Subcommands.Add(command);
        }

        return root;
    }

    /// <summary>Parses and runs a command line.</summary>
    /// <param name="args">The arguments.</param>
    /// <param name="output">Where normal output goes.</param>
    /// <param name="error">Where errors go.</param>
    /// <param name="cancellationToken">Cancels the command (SIGINT/SIGTERM in the <c>drydock</c> process): it cleans up,
    /// prints one line starting <c>drydock: interrupted</c> and returns <see cref="ExitCodes.Cancelled"/>.</param>
    /// <returns>The process exit code.</returns>
    public static Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default) =>
        RunAsync(args, output, error, null, cancellationToken);

    /// <summary>Parses and runs a command line with the hypervisor drivers given.</summary>
    internal static Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, Func<HypervisorConnectors>? connectors, CancellationToken cancellationToken = default)
    {
        // Signals are the caller's (Program.cs: TerminationSignals): System.CommandLine's handling would end the process
        // 2 s after a signal, even in the middle of releasing a capture or after a commit.
        var configuration = new InvocationConfiguration { Output = output, Error = error, ProcessTerminationTimeout = null };
        var parse = Build(connectors).Parse(args);
        if (parse.Errors.Count > 0 && parse.Action is System.CommandLine.Invocation.ParseErrorAction)
        {
            return UsageErrorAsync(parse, error);
        }

        return parse.InvokeAsync(configuration, cancellationToken);
    }

    /// <summary>A command line that does not parse: every error on standard error, exit code 2 (<see cref="ExitCodes.Usage"/>).</summary>
    private static async Task<int> UsageErrorAsync(ParseResult parse, TextWriter error)
    {
        foreach (var message in parse.Errors.Select(e => e.Message).Distinct(StringComparer.Ordinal))
        {
            await error.WriteLineAsync($"drydock: usage: {message}");
        }

        var names = new List<string>();
        for (var result = parse.CommandResult; result.Parent is CommandResult parent; result = parent)
        {
            names.Insert(0, result.Command.Name);
        }

        await error.WriteLineAsync($"see: drydock {string.Join(' ', names.Append("--help"))}");
        return ExitCodes.Usage;
    }
}
