using System.Security.Cryptography;
using System.Text.Json;
using Drydock.Hypervisor.Contract;
using Drydock.Hypervisor.Libvirt;
using Drydock.Interop.Tests.Hypervisor;
using Drydock.Interop.Tests.Hypervisor.Libvirt;
using Drydock.SiloHost.Cli;
using Drydock.TestKit;
using Drydock.TestKit.Libvirt;
using Xunit;

namespace Drydock.Interop.Tests.Transfer;

/// <summary>The helper both driver-specific classes share: a repository, the CLI, and byte comparisons with qemu-img.</summary>
internal sealed class CliRig : IDisposable
{
    private const long MiB = 1024 * 1024;
    private readonly TestDirectory _directory = TestDirectory.Create("cli-e2e");
    private readonly HypervisorConnectors _connectors;

    public CliRig(HypervisorConnectors connectors)
    {
        _connectors = connectors;
        PassFile = _directory.File("pass");
        File.WriteAllText(PassFile, "cli end-to-end passphrase\n");
        RepoDirectory = _directory.CreateSubdirectory("repo");
        Repo = new Uri(RepoDirectory).AbsoluteUri;
    }

    /// <summary>The repository's directory (a <c>file://</c> repository).</summary>
    public string RepoDirectory { get; }

    public string PassFile { get; }

    public string Repo { get; }

    public string Directory(string name) => _directory.File(name);

    public static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static byte[] Data(int length) => RandomNumberGenerator.GetBytes(length);

    public async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = await DrydockCli.RunAsync(args, output, error, () => _connectors, Ct);
        return (code, output.ToString(), error.ToString());
    }

    public async Task<JsonElement> JsonAsync(params string[] args)
    {
        var (code, output, error) = await RunAsync([.. args, "--repo", Repo, "--passphrase-file", PassFile, "--json"]);
        Assert.True(code == 0, $"drydock {string.Join(' ', args)}: exit {code}: {error}");
        using var document = JsonDocument.Parse(output);
        return document.RootElement.Clone();
    }

    public async Task InitAsync()
    {
        var (code, _, error) = await RunAsync("repo", "init", Repo, "--passphrase-file", PassFile, "--kdf-iterations", "1000");
        Assert.True(code == 0, error);
    }

    /// <summary>Saves what the guest sees now as a raw file, to compare restores with.</summary>
    public async Task<string> SaveLiveAsync(ContractHarness harness, string target, string name)
    {
        var path = _directory.File(name + ".raw");
        await File.WriteAllBytesAsync(path, await harness.ReadLiveAsync(target, 0, (int)(16 * MiB), Ct), Ct);
        return path;
    }

    public static async Task AssertSameAsync(string expected, string image, string format)
    {
        var compare = await ProcessRunner.RunAsync("qemu-img", ["compare", "-f", "raw", "-F", format, expected, image], new ProcessRunOptions { ThrowOnNonZeroExit = false }, Ct);
        Assert.True(compare.ExitCode == 0, $"{image} differs from {expected}: {compare.StandardOutput} {compare.StandardError}");
    }

    public static string Levels(JsonElement backup) =>
        string.Join(",", backup.GetProperty("disks").EnumerateArray().Select(d => d.GetProperty("disk").GetString() + ":" + d.GetProperty("level").GetString()));

    public void Dispose() => _directory.Dispose();
}

/// <summary><c>drydock backup / points / restore</c> against a real qemu-storage-daemon through <c>--hypervisor qemu:unix:…</c>.</summary>
public sealed class QemuCliEndToEndTests
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task Backup_incremental_and_qcow2_restore_through_the_qemu_uri_are_byte_exact()
    {
        await using var h = await QemuContractHarness.CreateAsync(new ContractDomainSpec(), CliRig.Ct);
        using var rig = new CliRig(new HypervisorConnectors().Add(new Drydock.Hypervisor.Qemu.QemuConnector()));
        await rig.InitAsync();
        var uri = "qemu:" + h.ConnectorAddress;
        await h.WriteAsync("vda", 0, CliRig.Data(2 * (int)MiB), CliRig.Ct);
        await h.WriteAsync("vdb", 5 * MiB, CliRig.Data((int)MiB), CliRig.Ct);

        // The harness's own driver holds the monitor; the CLI connects as a separate process would.
        await h.ReopenDriverAsync(CliRig.Ct);
        var full = await rig.JsonAsync("backup", h.DomainId, "--hypervisor", uri);
        Assert.Equal("vda:full,vdb:full", CliRig.Levels(full));
        var atFull = await rig.SaveLiveAsync(h, "vda", "full-vda");

        await h.WriteAsync("vda", 8 * MiB, CliRig.Data(64 * 1024), CliRig.Ct);
        await h.TrimAsync("vda", 0, MiB, CliRig.Ct);
        await h.ReopenDriverAsync(CliRig.Ct);
        var inc = await rig.JsonAsync("backup", h.DomainId, "--hypervisor", uri);
        Assert.Equal("vda:inc,vdb:inc", CliRig.Levels(inc));
        var read = inc.GetProperty("disks").EnumerateArray().Sum(d => d.GetProperty("bytesRead").GetInt64());
        Assert.InRange(read, 64 * 1024, 2 * MiB);
        var atInc = await rig.SaveLiveAsync(h, "vda", "inc-vda");

        var points = await rig.JsonAsync("points", h.DomainId);
        Assert.Equal(2, points.GetArrayLength());

        var first = rig.Directory("restore-1");
        await rig.JsonAsync("restore", h.DomainId, "--point", "1", "--to", first, "--disk", "vda");
        await CliRig.AssertSameAsync(atFull, Path.Combine(first, "vda.raw"), "raw");
        var second = rig.Directory("restore-2");
        await rig.JsonAsync("restore", h.DomainId, "--to", second, "--format", "qcow2", "--disk", "vda");
        await CliRig.AssertSameAsync(atInc, Path.Combine(second, "vda.qcow2"), "qcow2");

        await h.ReopenDriverAsync(CliRig.Ct);
        Assert.Empty(await h.FindLeftoversAsync(CliRig.Ct));
    }
}

/// <summary><c>drydock backup / restore --into-domain --changed-only</c> against real libvirt through <c>--hypervisor libvirt:qemu:///system</c>.</summary>
[Collection(LibvirtCollection.Name)]
public sealed class LibvirtCliEndToEndTests(LibvirtFixture fixture)
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task Backup_with_a_fresh_work_directory_creates_the_socket_and_scratch_directories_QEMU_needs()
    {
        // $DRYDOCK_WORK_DIR with no nbd/ or scratch/ in it: libvirt could not create the scratch file and QEMU could not
        // create the NBD socket (nbd-server-start: Permission denied) until the driver prepared both.
        await using var h = await LibvirtContractHarness.StartAsync(fixture, new ContractDomainSpec(), CliRig.Ct);
        var work = Path.Combine(fixture.DirectoryPath, "work-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3)));
        using var rig = new CliRig(HypervisorConnectors.CreateDefault(work));
        await rig.InitAsync();
        await h.WriteAsync("vda", MiB, CliRig.Data((int)MiB), CliRig.Ct);

        var full = await rig.JsonAsync("backup", h.DomainId, "--hypervisor", "libvirt:" + LibvirtDaemon.Uri);
        Assert.Equal(1, full.GetProperty("point").GetInt64());
        var owner = await ProcessRunner.RunAsync("stat", ["-c", "%U %a", Path.Combine(work, "nbd"), Path.Combine(work, "scratch")], cancellationToken: CliRig.Ct);
        Assert.Equal("libvirt-qemu 750\nroot 755", owner.StandardOutput.Trim());
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(work, "nbd")));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(work, "scratch")));
    }

    [Fact]
    public async Task Backup_then_changed_only_restore_into_the_stopped_domain_rolls_it_back()
    {
        await using var h = await LibvirtContractHarness.StartAsync(fixture, new ContractDomainSpec(), CliRig.Ct);
        var connectors = new HypervisorConnectors().Add(new LibvirtConnector(new LibvirtDriverOptions
        {
            SocketDirectory = fixture.SocketDirectory,
            ScratchDirectory = fixture.ScratchDirectory,
        }));
        using var rig = new CliRig(connectors);
        await rig.InitAsync();
        const string Uri = "libvirt:" + LibvirtDaemon.Uri;
        await h.WriteAsync("vda", MiB, CliRig.Data(3 * (int)MiB), CliRig.Ct);

        var full = await rig.JsonAsync("backup", h.DomainId, "--hypervisor", Uri);
        Assert.Equal(1, full.GetProperty("point").GetInt64());
        var atFull = await rig.SaveLiveAsync(h, "vda", "full-vda");

        // The guest goes on; then the domain is stopped and rolled back in place, changed chunks only.
        await h.WriteAsync("vda", 10 * MiB, CliRig.Data(128 * 1024), CliRig.Ct);
        await h.Driver.DestroyAsync(h.DomainId, CliRig.Ct);
        var restore = await rig.JsonAsync("restore", h.DomainId, "--into-domain", "--changed-only", "--hypervisor", Uri, "--disk", "vda");
        var disk = Assert.Single(restore.GetProperty("disks").EnumerateArray().ToList());
        // One 128 KiB write landed in one chunk that was zero at the backup: that chunk is zeroed, every other is left alone.
        Assert.Equal(1, disk.GetProperty("chunksWritten").GetInt64() + disk.GetProperty("chunksZeroed").GetInt64());
        Assert.True(disk.GetProperty("chunksSkipped").GetInt64() >= 3, disk.ToString());

        await h.Driver.StartAsync(h.DomainId, paused: true, CliRig.Ct);
        var after = await rig.SaveLiveAsync(h, "vda", "after-vda");
        await CliRig.AssertSameAsync(atFull, after, "raw");
        Assert.Empty(await h.FindLeftoversAsync(CliRig.Ct));
    }
}
