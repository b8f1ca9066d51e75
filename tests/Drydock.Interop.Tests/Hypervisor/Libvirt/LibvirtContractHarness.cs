using System.Globalization;
using System.Text.Json;
using Drydock.Hypervisor;
using Drydock.Hypervisor.Contract;
using Drydock.Hypervisor.Libvirt;
using Drydock.TestKit;
using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Hypervisor.Libvirt;

/// <summary>The driver contract suite against real libvirt 9.0 + QEMU 7.2 (TCG), one domain per test.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtContractTests(LibvirtFixture fixture) : HypervisorContractTests
{
    protected override async Task<ContractHarness> CreateHarnessAsync(ContractDomainSpec spec, CancellationToken cancellationToken) =>
        await LibvirtContractHarness.StartAsync(fixture, spec, cancellationToken);
}

/// <summary>
/// A libvirt domain for one contract test: TCG, running, disks <c>vda</c>, <c>vdb</c>, …; guest IO through HMP
/// <c>qemu-io</c> on the virtio device path; leftovers from virsh (jobs, checkpoints), QMP (bitmaps) and the scratch and
/// socket directories.
/// </summary>
internal sealed class LibvirtContractHarness : ContractHarness
{
    private readonly LibvirtFixture _fixture;
    private readonly LibvirtTestDomain _domain;
    private readonly List<LibvirtDriver> _abandoned = [];
    private readonly string _scratch;
    private readonly string? _limitedScratch;
    private LibvirtDriver _driver;
    private int _files;

    private LibvirtContractHarness(LibvirtFixture fixture, LibvirtTestDomain domain, LibvirtDriver driver, string? limitedScratch)
    {
        _fixture = fixture;
        _domain = domain;
        _driver = driver;
        _limitedScratch = limitedScratch;
        _scratch = limitedScratch ?? fixture.ScratchDirectory;
    }

    public override bool FleeceLimited => _limitedScratch is not null;

    public override IHypervisorDriver Driver => _driver;

    public override string DomainId => _domain.Uuid;

    public override IReadOnlyList<string> Targets => [.. _domain.Disks.Select(d => d.Target)];

    public static async Task<LibvirtContractHarness> StartAsync(LibvirtFixture fixture, ContractDomainSpec spec, CancellationToken cancellationToken)
    {
        var disks = Enumerable.Range(0, spec.Disks)
            .Select(i => new TestDiskSpec("vd" + (char)('a' + i), (long)spec.DiskSize, spec.RawLastDisk && i == spec.Disks - 1 ? ImageFormat.Raw : ImageFormat.Qcow2))
            .ToList();
        var domain = await fixture.CreateDomainAsync(disks, start: false, cancellationToken);
        string? limited = null;
        try
        {
            if (spec.LimitedFleece && Environment.UserName == "root")
            {
                // F17: scratch files on a 1 MiB tmpfs, mounted before QEMU starts: libvirt gives QEMU a private mount
                // namespace copied from the host's at start, so later mounts are invisible to it.
                limited = Path.Combine(domain.DirectoryPath, "scratch-1m");
                Directory.CreateDirectory(limited);
                await ProcessRunner.RunAsync("mount", ["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", limited], cancellationToken);
            }

            await LibvirtDaemon.VirshAsync(["start", domain.Name], cancellationToken);

            var driver = await LibvirtTestSupport.ConnectAsync(fixture, cancellationToken, limited);
            return new LibvirtContractHarness(fixture, domain, driver, limited);
        }
        catch
        {
            if (limited is not null)
            {
                await ProcessRunner.RunAsync("umount", ["-l", limited], new ProcessRunOptions { ThrowOnNonZeroExit = false }, CancellationToken.None);
            }

            await domain.DisposeAsync();
            throw;
        }
    }

    public override async Task WriteAsync(string target, ulong offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        // qemu-io's "write -s FILE" fills the buffer from a file that QEMU (user libvirt-qemu) reads.
        var file = Path.Combine(_domain.DirectoryPath, string.Create(CultureInfo.InvariantCulture, $"write-{Interlocked.Increment(ref _files)}.bin"));
        await File.WriteAllBytesAsync(file, data.ToArray(), cancellationToken);
        File.SetUnixFileMode(file, (UnixFileMode)0b110_100_100);
        try
        {
            await HmpQemuIoAsync(target, string.Create(CultureInfo.InvariantCulture, $"write -s {file} {offset} {data.Length}"), cancellationToken);
        }
        catch (InvalidOperationException ex) when (_limitedScratch is not null && ex.Message.Contains("No space left on device", StringComparison.Ordinal))
        {
            // Observed on libvirt 9.0 + QEMU 7.2: libvirt's pull backup does not set QEMU's on-cbw-error=break-snapshot,
            // so a full scratch fails the guest's write (a virtio request would pause the domain; the driver then aborts
            // the job and resumes it). The contract's outcome cannot be met here: skip with what happened.
            Assert.Skip($"libvirt 9.0 fails the guest's write when the scratch space is full instead of breaking the snapshot: {ex.Message}");
        }
        finally
        {
            File.Delete(file);
        }
    }

    public override Task TrimAsync(string target, ulong offset, ulong length, CancellationToken cancellationToken = default) =>
        HmpQemuIoAsync(target, string.Create(CultureInfo.InvariantCulture, $"discard {offset} {length}"), cancellationToken);

    public override async Task<byte[]> ReadLiveAsync(string target, ulong offset, int length, CancellationToken cancellationToken = default)
    {
        // A domain paused on an I/O error holds the failed write for a retry: the guest sees its disk once it runs again.
        for (var i = 0; i < 200 && (await LibvirtDaemon.VirshAsync(["domstate", "--reason", _domain.Name], cancellationToken)).StandardOutput.Contains("I/O error", StringComparison.Ordinal); i++)
        {
            await Task.Delay(100, cancellationToken);
        }

        // Flush the guest's writes (data and qcow2 metadata), then read the image beside the running QEMU.
        await HmpQemuIoAsync(target, "flush", cancellationToken);
        var spec = _domain.Disks.Single(d => d.Target == target);
        var raw = Path.Combine(_domain.DirectoryPath, string.Create(CultureInfo.InvariantCulture, $"read-{Interlocked.Increment(ref _files)}.raw"));
        try
        {
            await ProcessRunner.RunAsync("qemu-img", ["convert", "-U", "-f", spec.Format, "-O", "raw", _domain.Images[target], raw], cancellationToken);
            await using var stream = File.OpenRead(raw);
            stream.Position = (long)offset;
            var buffer = new byte[length];
            await stream.ReadExactlyAsync(buffer, cancellationToken);
            return buffer;
        }
        finally
        {
            File.Delete(raw);
        }
    }

    public override async Task<IReadOnlyList<string>> FindLeftoversAsync(CancellationToken cancellationToken = default)
    {
        var leftovers = new List<string>();
        var job = await LibvirtDaemon.VirshAsync(["backup-dumpxml", _domain.Name], throwOnFailure: false, TimeSpan.FromSeconds(60), cancellationToken);
        if (job.Succeeded)
        {
            leftovers.Add("backup job " + job.StandardOutput.Trim());
        }

        leftovers.AddRange(Directory.EnumerateFiles(_scratch, LibvirtDriver.CapturePrefix + "*").Select(f => "scratch file " + f));
        leftovers.AddRange(Directory.EnumerateFileSystemEntries(_fixture.SocketDirectory, DrydockNames.Prefix + "*").Select(f => "socket " + f));
        var checkpoints = (await LibvirtDaemon.VirshAsync(["checkpoint-list", "--name", _domain.Name], cancellationToken)).StandardOutput
            .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .ToHashSet(StringComparer.Ordinal);
        if ((await LibvirtDaemon.VirshAsync(["domstate", _domain.Name], cancellationToken)).StandardOutput.Contains("running", StringComparison.Ordinal)
            || (await LibvirtDaemon.VirshAsync(["domstate", _domain.Name], cancellationToken)).StandardOutput.Contains("paused", StringComparison.Ordinal))
        {
            using var reply = JsonDocument.Parse(await _domain.QmpAsync("""{"execute":"query-named-block-nodes","arguments":{"flat":true}}""", cancellationToken));
            foreach (var node in reply.RootElement.GetProperty("return").EnumerateArray())
            {
                var name = node.GetProperty("node-name").GetString()!;
                if (!name.StartsWith("libvirt-", StringComparison.Ordinal))
                {
                    continue;
                }

                if (node.GetProperty("drv").GetString() is "copy-before-write" or "snapshot-access")
                {
                    leftovers.Add($"node {name} ({node.GetProperty("drv").GetString()})");
                }

                if (node.TryGetProperty("dirty-bitmaps", out var bitmaps))
                {
                    foreach (var bitmap in bitmaps.EnumerateArray().Select(b => b.GetProperty("name").GetString()!))
                    {
                        // Every bitmap belongs to a checkpoint libvirt knows; backup-<disk> bitmaps end with the job.
                        if (!checkpoints.Contains(bitmap))
                        {
                            leftovers.Add($"bitmap {bitmap} on {name} without a checkpoint");
                        }
                    }
                }
            }
        }

        return leftovers;
    }

    public override async Task RestartCleanlyAsync(CancellationToken cancellationToken = default)
    {
        await LibvirtDaemon.VirshAsync(["destroy", _domain.Name], cancellationToken);
        await LibvirtDaemon.VirshAsync(["start", _domain.Name], cancellationToken);
    }

    public override Task KillAsync(CancellationToken cancellationToken = default) => _domain.KillQemuAsync(cancellationToken);

    public override bool HasManagementDaemon => true;

    public override Task RestartManagementDaemonAsync(CancellationToken cancellationToken = default) =>
        _fixture.Daemon.RestartAsync(cancellationToken: cancellationToken);

    public override Task StartAgainAsync(CancellationToken cancellationToken = default) =>
        LibvirtDaemon.VirshAsync(["start", _domain.Name], cancellationToken);

    public override async Task RemoveBitmapAsync(string target, string bitmap, CancellationToken cancellationToken = default)
    {
        var xml = System.Xml.Linq.XElement.Parse((await LibvirtDaemon.VirshAsync(["dumpxml", _domain.Name], cancellationToken)).StandardOutput);
        var disk = xml.Element("devices")!.Elements("disk").Single(d => (string?)d.Element("target")?.Attribute("dev") == target);
        var node = "libvirt-" + (string)disk.Element("source")!.Attribute("index")! + "-format";
        var reply = await _domain.QmpAsync($$$"""{"execute":"block-dirty-bitmap-remove","arguments":{"node":"{{{node}}}","name":"{{{bitmap}}}"}}""", cancellationToken);
        Assert.DoesNotContain("\"error\"", reply, StringComparison.Ordinal);
    }

    public override Task LoseCheckpointMetadataAsync(string checkpoint, CancellationToken cancellationToken = default) =>
        LibvirtDaemon.VirshAsync(["checkpoint-delete", "--metadata", _domain.Name, checkpoint], cancellationToken);

    public override Task CreateForeignCheckpointAsync(string name, CancellationToken cancellationToken = default) =>
        LibvirtDaemon.VirshAsync(["checkpoint-create-as", _domain.Name, name], cancellationToken);

    public override Task ResizeDiskAsync(string target, ulong newSize, CancellationToken cancellationToken = default) =>
        LibvirtDaemon.VirshAsync(["blockresize", _domain.Name, target, string.Create(CultureInfo.InvariantCulture, $"{newSize}B")], cancellationToken);

    public override Task HotAddDiskAsync(string target, ulong size, CancellationToken cancellationToken = default) =>
        _domain.AttachDiskAsync(new TestDiskSpec(target, (long)size), cancellationToken);

    public override Task RemoveDiskAsync(string target, CancellationToken cancellationToken = default) =>
        _domain.DetachDiskAsync(target, cancellationToken);

    public override async Task ReplaceDiskAsync(string target, CancellationToken cancellationToken = default)
    {
        // Another image under the same target: stop, swap the file, start (the images are the domain's).
        await LibvirtDaemon.VirshAsync(["destroy", _domain.Name], cancellationToken);
        var image = _domain.Images[target];
        var spec = _domain.Disks.Single(d => d.Target == target);
        await QemuImage.CreateAsync(image + ".new", spec.Format, spec.Size, cancellationToken);
        File.Move(image + ".new", image, overwrite: true);
        await LibvirtDaemon.VirshAsync(["start", _domain.Name], cancellationToken);
    }

    public override async Task ReopenDriverAsync(CancellationToken cancellationToken = default)
    {
        // A dying process releases nothing: keep the old instance (undisposed until the harness ends) and open another.
        _abandoned.Add(_driver);
        _driver = await LibvirtTestSupport.ConnectAsync(_fixture, cancellationToken, _limitedScratch);
    }

    public override async ValueTask DisposeAsync()
    {
        // A test that ended early (failed or skipped) may leave a capture: release it so the next test starts clean.
        try
        {
            await _driver.ReconcileAsync(new ReconcilePlan { DomainId = DomainId }, CancellationToken.None);
        }
        catch (HypervisorException)
        {
            // The domain may be gone or stopped; its files are removed with it.
        }

        await _driver.DisposeAsync();
        foreach (var driver in _abandoned)
        {
            await driver.DisposeAsync();
        }

        if (_limitedScratch is not null)
        {
            await ProcessRunner.RunAsync("umount", ["-l", _limitedScratch], new ProcessRunOptions { ThrowOnNonZeroExit = false }, CancellationToken.None);
        }

        await _domain.DisposeAsync();
    }

    private Task HmpQemuIoAsync(string target, string command, CancellationToken cancellationToken) =>
        _domain.QemuIoAsync(target, command, cancellationToken);
}
