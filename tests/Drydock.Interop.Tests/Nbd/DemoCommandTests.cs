using Xunit;

namespace Drydock.Interop.Tests.Nbd;

/// <summary>The README's "run" command must work and must check what it claims.</summary>
public sealed class DemoCommandTests
{
    [Fact]
    public async Task Demo_serves_maps_copies_and_verifies_a_simulated_disk()
    {
        var result = await CliRunner.RunAsync("nbd", "demo", "--size-mib", "64", "--seed", "7");

        Assert.True(result.ExitCode == 0, result.Error + result.Output);
        Assert.Contains("contexts base:allocation, qemu:dirty-bitmap:drydock-demo-cp1", result.Output, StringComparison.Ordinal);
        Assert.Contains("verify: copy equals disk", result.Output, StringComparison.Ordinal);
        Assert.Contains("all equal to the disk", result.Output, StringComparison.Ordinal);
        Assert.EndsWith(")", result.Output.TrimEnd(), StringComparison.Ordinal);
        Assert.StartsWith("OK in ", result.Output.TrimEnd().Split('\n')[^1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task Demo_rejects_an_absurd_size_as_a_usage_error()
    {
        var result = await CliRunner.RunAsync("nbd", "demo", "--size-mib", "1");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--size-mib", result.Error, StringComparison.Ordinal);
    }
}
