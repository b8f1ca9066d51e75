using System.Text.Json;
using Xunit;
using Drydock.SiloHost.Cli;

namespace Drydock.Interop.Tests.Nbd;

/// <summary>The outcome of one in-process run of the <c>drydock</c> command line.</summary>
public sealed record CliResult(int ExitCode, string Output, string Error)
{
    public JsonDocument Json() => JsonDocument.Parse(Output);
}

/// <summary>Runs <c>drydock</c> commands in-process, capturing their output.</summary>
public static class CliRunner
{
    public static async Task<CliResult> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var exitCode = await DrydockCli.RunAsync(args, output, error, TestContext.Current.CancellationToken);
        return new CliResult(exitCode, output.ToString(), error.ToString());
    }

    /// <summary>Adjacent extents with equal type merged: servers may split a run into several extents.</summary>
    public static List<(long Offset, long Length, uint Type)> Normalize(IEnumerable<(long Offset, long Length, uint Type)> extents)
    {
        var merged = new List<(long Offset, long Length, uint Type)>();
        foreach (var extent in extents)
        {
            if (merged.Count > 0 && merged[^1].Type == extent.Type && merged[^1].Offset + merged[^1].Length == extent.Offset)
            {
                merged[^1] = (merged[^1].Offset, merged[^1].Length + extent.Length, extent.Type);
            }
            else
            {
                merged.Add(extent);
            }
        }

        return merged;
    }
}
