using Drydock.SiloHost.Cli;
using Xunit;

namespace Drydock.SiloHost.Tests.Cli;

/// <summary>The README's "run" command must work and check what it claims.</summary>
public sealed class DemoCommandTests
{
    [Fact]
    public async Task Demo_backs_up_three_levels_restores_every_point_and_rolls_back_in_place()
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = await DrydockCli.RunAsync(["demo", "--size-mib", "32", "--seed", "3"], output, error, TestContext.Current.CancellationToken);

        var text = output.ToString();
        Assert.True(code == 0, error.ToString() + text);
        Assert.Contains("$ drydock backup web-1 --hypervisor sim:demo-host --level inc", text, StringComparison.Ordinal);
        for (var point = 1; point <= 3; point++)
        {
            Assert.Contains($"verify: point {point} restored byte-identical", text, StringComparison.Ordinal);
        }

        Assert.Contains("verify: the domain's disks equal point 1 after the changed-only restore", text, StringComparison.Ordinal);
        Assert.StartsWith("OK in ", text.TrimEnd().Split('\n')[^1], StringComparison.Ordinal);
    }
}
