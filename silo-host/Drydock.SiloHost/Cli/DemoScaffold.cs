using System.CommandLine;

namespace Drydock.SiloHost.Cli;

/// <summary>What every demo command shares: <c>--size-mib</c>, <c>--seed</c>, <c>--keep</c>, and a temporary directory
/// that is deleted afterwards unless kept.</summary>
internal static class DemoScaffold
{
    public const long MiB = 1024 * 1024;

    /// <summary>A demo command whose body runs in a fresh temporary directory with the size (bytes) and seed asked for.</summary>
    public static Command Create(string name, string description, int defaultSizeMiB, string sizeDescription, string keepDescription,
        Func<string, long, int, TextWriter, TextWriter, CancellationToken, Task<int>> body)
    {
        var size = new Option<int>("--size-mib") { Description = sizeDescription, DefaultValueFactory = _ => defaultSizeMiB };
        var seed = new Option<int>("--seed") { Description = "Seed of the simulated guest's writes.", DefaultValueFactory = _ => 2026 };
        var keep = new Option<bool>("--keep") { Description = keepDescription };
        var command = new Command(name, description) { size, seed, keep };
        command.SetGuardedAction(async (parse, cancellationToken) =>
        {
            var sizeMiB = parse.GetValue(size);
            if (sizeMiB is < 16 or > 65536)
            {
                throw new ArgumentException($"--size-mib must be between 16 and 65536, not {sizeMiB}");
            }

            var output = parse.InvocationConfiguration.Output;
            var directory = Directory.CreateTempSubdirectory("drydock-demo-").FullName;
            try
            {
                return await body(directory, sizeMiB * MiB, parse.GetValue(seed), output, parse.InvocationConfiguration.Error, cancellationToken);
            }
            finally
            {
                if (!parse.GetValue(keep))
                {
                    Directory.Delete(directory, recursive: true);
                }
                else
                {
                    await output.WriteLineAsync($"kept {directory}");
                }
            }
        });
        return command;
    }
}
