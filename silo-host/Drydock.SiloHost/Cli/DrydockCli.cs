using System.CommandLine;
using System.Reflection;
using Drydock.SiloHost.Cli.Nbd;

namespace Drydock.SiloHost.Cli;

/// <summary>The <c>drydock</c> command tree.</summary>
public static class DrydockCli
{
    /// <summary>Builds the root command.</summary>
    /// <returns>The root command with every subcommand attached.</returns>
    public static RootCommand Build()
    {
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
        return root;
    }

    /// <summary>Parses and runs a command line.</summary>
    /// <param name="args">The arguments.</param>
    /// <param name="output">Where normal output goes.</param>
    /// <param name="error">Where errors go.</param>
    /// <param name="cancellationToken">Cancels the command.</param>
    /// <returns>The process exit code.</returns>
    public static Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        var configuration = new InvocationConfiguration { Output = output, Error = error };
        return Build().Parse(args).InvokeAsync(configuration, cancellationToken);
    }
}
