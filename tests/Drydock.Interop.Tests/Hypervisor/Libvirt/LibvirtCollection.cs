using Drydock.Hypervisor;
using Drydock.Hypervisor.Libvirt;
using Drydock.Nbd.Client;
using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor.Libvirt;

/// <summary>Every test that talks to libvirtd: one daemon per machine, so one collection (run one after another).</summary>
[CollectionDefinition(Name)]
public sealed class LibvirtCollection : ICollectionFixture<LibvirtFixture>
{
    public const string Name = "libvirt";
}

/// <summary>Driver construction and libvirt-side assertions shared by the libvirt tests.</summary>
internal static class LibvirtTestSupport
{
    public static Task<LibvirtDriver> ConnectAsync(LibvirtFixture fixture, CancellationToken cancellationToken, string? scratchDirectory = null) =>
        LibvirtDriver.ConnectAsync(new LibvirtDriverOptions
        {
            Uri = LibvirtDaemon.Uri,
            SocketDirectory = fixture.SocketDirectory,
            ScratchDirectory = scratchDirectory ?? fixture.ScratchDirectory,
            WorkerThreads = 2,
        }, cancellationToken: cancellationToken);

    /// <summary>The ranges a capture disk's changed-blocks context marks dirty, read through Drydock.Nbd.</summary>
    public static async Task<List<(long Offset, long Length)>> DirtyAsync(CaptureDisk disk, CancellationToken ct)
    {
        var options = new NbdClientOptions();
        options.MetaContexts.Add(disk.ChangedBlocksContext!);
        await using var client = await NbdClient.ConnectAsync(disk.Endpoint, options, ct);
        var map = await client.MapAsync([disk.ChangedBlocksContext!], cancellationToken: ct);
        return [.. map[disk.ChangedBlocksContext!].Where(e => e.IsDirty).Select(e => ((long)e.Offset, (long)e.Length))];
    }

    /// <summary>
    /// Asserts, through virsh and QMP (not through the driver), that the domain has no backup job, that no scratch file
    /// or socket of a capture is left, and that its checkpoints are exactly <paramref name="checkpoints"/> and its bitmaps
    /// exactly <paramref name="bitmaps"/> (by default the same names).
    /// </summary>
    public static async Task AssertCleanAsync(LibvirtFixture fixture, LibvirtTestDomain domain, IReadOnlyCollection<string> checkpoints, CancellationToken cancellationToken, IReadOnlyCollection<string>? bitmaps = null)
    {
        var job = await LibvirtDaemon.VirshAsync(["backup-dumpxml", domain.Name], throwOnFailure: false, TimeSpan.FromSeconds(60), cancellationToken);
        Assert.False(job.Succeeded, $"A backup job is still running on {domain.Name}: {job.StandardOutput}");
        Assert.Empty(Directory.EnumerateFiles(fixture.ScratchDirectory, LibvirtDriver.CapturePrefix + "*"));
        Assert.Empty(Directory.EnumerateFileSystemEntries(fixture.SocketDirectory, LibvirtDriver.CapturePrefix + "*"));
        var list = await LibvirtDaemon.VirshAsync(["checkpoint-list", "--name", domain.Name], cancellationToken);
        var names = list.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(checkpoints.Order(StringComparer.Ordinal), names.Order(StringComparer.Ordinal));
        var state = await LibvirtDaemon.VirshAsync(["domstate", domain.Name], cancellationToken);
        if (!state.StandardOutput.Contains("shut off", StringComparison.Ordinal))
        {
            var nodes = await domain.QmpAsync("""{"execute":"query-named-block-nodes","arguments":{"flat":true}}""", cancellationToken);
            using var reply = System.Text.Json.JsonDocument.Parse(nodes);
            var actual = reply.RootElement.GetProperty("return").EnumerateArray()
                .Where(n => n.TryGetProperty("dirty-bitmaps", out _))
                .SelectMany(n => n.GetProperty("dirty-bitmaps").EnumerateArray().Select(b => b.GetProperty("name").GetString()!))
                .Distinct(StringComparer.Ordinal)
                .Order(StringComparer.Ordinal);
            Assert.Equal((bitmaps ?? checkpoints).Order(StringComparer.Ordinal), actual);
        }
    }
}
