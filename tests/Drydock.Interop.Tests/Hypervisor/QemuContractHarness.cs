using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Drydock.Hypervisor;
using Drydock.Hypervisor.Contract;
using Drydock.Hypervisor.Qemu;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.TestKit;

namespace Drydock.Interop.Tests.Hypervisor;

/// <summary>
/// One real qemu-storage-daemon domain for one contract test. Normally the driver launches it (so start paused,
/// resume and destroy are exercised); with a limited fleece (F17) the harness launches it itself inside a private
/// mount namespace whose fleece directory is a 1 MiB tmpfs, and the driver attaches to it. The guest writes through
/// the writable NBD export of each disk's front node; the harness has its own QMP monitor (a second one) to inject
/// faults and to inspect the real state for leftovers.
/// </summary>
internal sealed class QemuContractHarness : ContractHarness
{
    private const string DomainName = "qsd-contract";
    private readonly TestDirectory _directory;
    private readonly QemuDriverOptions _options;
    private readonly QemuDomainOptions _domain;
    private readonly string _harnessMonitor;
    private readonly ManagedProcess? _process;
    private QemuDriver _driver;
    private QmpClient? _qmp;

    private QemuContractHarness(TestDirectory directory, QemuDriverOptions options, string harnessMonitor, ManagedProcess? process)
    {
        _directory = directory;
        _options = options;
        _domain = options.Domains[0];
        _harnessMonitor = harnessMonitor;
        _process = process;
        _driver = new QemuDriver(options);
    }

    public override IHypervisorDriver Driver => _driver;

    public override string DomainId => _domain.Id;

    public override IReadOnlyList<string> Targets => [.. _domain.Disks.Select(d => d.Target)];

    public override bool FleeceLimited => _process is not null;

    /// <summary>The <c>qemu:</c> hypervisor URI address of this instance, as <c>drydock --hypervisor qemu:…</c> takes it.</summary>
    public string ConnectorAddress => $"unix:{_domain.QmpSocketPath}?id={_domain.Id}&fleece={_domain.FleeceDirectory}&nbd={_domain.NbdSocketPath}";

    public static async Task<QemuContractHarness> CreateAsync(ContractDomainSpec spec, CancellationToken cancellationToken)
    {
        var directory = TestDirectory.Create("qemu-contract");
        try
        {
            var harnessMonitor = directory.SocketPath("harness.sock");
            var domain = new QemuDomainOptions
            {
                Id = DomainName,
                QmpSocketPath = directory.SocketPath("qmp.sock"),
                NbdSocketPath = directory.SocketPath("nbd.sock"),
                FleeceDirectory = directory.CreateSubdirectory("fleece"),
                PidFile = directory.File("qsd.pid"),
            };
            for (var i = 0; i < spec.Disks; i++)
            {
                var target = "vd" + (char)('a' + i);
                var raw = spec.RawLastDisk && i == spec.Disks - 1;
                var image = raw
                    ? await QemuImage.CreateRawAsync(directory.File(target + ".raw"), (long)spec.DiskSize, cancellationToken)
                    : await QemuImage.CreateQcow2Async(directory.File(target + ".qcow2"), (long)spec.DiskSize, cancellationToken);
                domain.Disks.Add(new QemuDiskOptions
                {
                    Target = target,
                    NodeName = "fmt-" + target,
                    FrontNodeName = "front-" + target,
                    ImagePath = image,
                    Format = raw ? ImageFormat.Raw : ImageFormat.Qcow2,
                    GuestExportName = target,
                });
            }

            var options = new QemuDriverOptions { HostName = "interop-host" };
            options.Domains.Add(domain);
            var monitor = new[] { "--chardev", $"socket,id=harness,path={harnessMonitor},server=on,wait=off", "--monitor", "chardev=harness" };
            ManagedProcess? process = null;
            if (spec.LimitedFleece && Environment.UserName == "root")
            {
                process = StartInPrivateNamespace(domain, monitor);
                await Readiness.WaitForPidFileAsync(process, domain.PidFile!, Readiness.DefaultTimeout, cancellationToken);
            }
            else
            {
                domain.Launch = new QemuLaunchOptions();
                foreach (var argument in monitor)
                {
                    domain.Launch.ExtraArguments.Add(argument);
                }
            }

            var harness = new QemuContractHarness(directory, options, harnessMonitor, process);
            if (process is null)
            {
                await harness._driver.StartAsync(DomainName, paused: false, cancellationToken);
            }

            return harness;
        }
        catch
        {
            directory.Dispose();
            throw;
        }
    }

    public override async Task WriteAsync(string target, ulong offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        await using var guest = await GuestAsync(target, cancellationToken);
        const int Chunk = 1024 * 1024;
        for (var at = 0; at < data.Length; at += Chunk)
        {
            await guest.WriteAsync(offset + (ulong)at, data.Slice(at, Math.Min(Chunk, data.Length - at)), cancellationToken: cancellationToken);
        }

        await guest.FlushAsync(cancellationToken);
    }

    public override async Task TrimAsync(string target, ulong offset, ulong length, CancellationToken cancellationToken = default)
    {
        await using var guest = await GuestAsync(target, cancellationToken);
        await guest.TrimAsync(offset, length, cancellationToken: cancellationToken);
        await guest.FlushAsync(cancellationToken);
    }

    public override async Task<byte[]> ReadLiveAsync(string target, ulong offset, int length, CancellationToken cancellationToken = default)
    {
        await using var guest = await GuestAsync(target, cancellationToken);
        var buffer = new byte[length];
        const int Chunk = 1024 * 1024;
        for (var at = 0; at < length; at += Chunk)
        {
            await guest.ReadAsync(offset + (ulong)at, buffer.AsMemory(at, Math.Min(Chunk, length - at)), cancellationToken);
        }

        return buffer;
    }

    public override async Task<IReadOnlyList<string>> FindLeftoversAsync(CancellationToken cancellationToken = default)
    {
        var leftovers = new List<string>();
        var pid = LivePid();
        if (pid is not null)
        {
            var qmp = await HarnessQmpAsync(cancellationToken);
            var expected = _domain.Disks.SelectMany(d => new[] { d.NodeName, d.NodeName + "-file", d.FrontNodeName }).ToHashSet();
            foreach (var node in (await qmp.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, cancellationToken)).EnumerateArray())
            {
                var name = node.GetProperty("node-name").GetString()!;
                if (!expected.Contains(name) && !name.StartsWith('#'))
                {
                    leftovers.Add($"node {name} ({node.GetProperty("drv").GetString()})");
                }

                if (node.TryGetProperty("dirty-bitmaps", out var bitmaps))
                {
                    foreach (var bitmap in bitmaps.EnumerateArray())
                    {
                        if (bitmap.TryGetProperty("name", out var b) && b.GetString()!.StartsWith("ddcap-", StringComparison.Ordinal))
                        {
                            leftovers.Add($"bitmap {b.GetString()} on {name}");
                        }
                    }
                }
            }

            foreach (var export in (await qmp.ExecuteAsync("query-block-exports", cancellationToken: cancellationToken)).EnumerateArray())
            {
                var id = export.GetProperty("id").GetString()!;
                if (!id.StartsWith("ddguest-", StringComparison.Ordinal))
                {
                    leftovers.Add($"export {id} on {export.GetProperty("node-name").GetString()}");
                }
            }

            foreach (var job in (await qmp.ExecuteAsync("query-jobs", cancellationToken: cancellationToken)).EnumerateArray())
            {
                leftovers.Add($"job {job.GetProperty("id").GetString()} ({job.GetProperty("status").GetString()})");
            }

            // Every front node sits on its format node again (not on a snapshot filter).
            var graph = await qmp.ExecuteAsync("x-debug-query-block-graph", cancellationToken: cancellationToken);
            foreach (var disk in _domain.Disks)
            {
                var child = ChildOf(graph, disk.FrontNodeName, "file");
                if (child != disk.NodeName)
                {
                    leftovers.Add($"front node {disk.FrontNodeName} sits on '{child}', not on '{disk.NodeName}'");
                }
            }
        }

        // Fleece files and capture records, as the daemon sees its directory (through /proc/PID/root).
        var fleece = pid is null ? _domain.FleeceDirectory : string.Create(CultureInfo.InvariantCulture, $"/proc/{pid}/root{_domain.FleeceDirectory}");
        if (Directory.Exists(fleece))
        {
            leftovers.AddRange(Directory.EnumerateFileSystemEntries(fleece).Select(f => "file " + Path.GetFileName(f)));
        }

        return leftovers;
    }

    public override async Task RestartCleanlyAsync(CancellationToken cancellationToken = default)
    {
        RequireLaunched("a clean restart");
        await SignalAndWaitAsync("-TERM", cancellationToken);
        await _driver.StartAsync(DomainId, paused: false, cancellationToken);
    }

    public override Task KillAsync(CancellationToken cancellationToken = default) => SignalAndWaitAsync("-KILL", cancellationToken);

    public override async Task StartAgainAsync(CancellationToken cancellationToken = default)
    {
        RequireLaunched("a restart");
        await _driver.StartAsync(DomainId, paused: false, cancellationToken);
    }

    public override async Task RemoveBitmapAsync(string target, string bitmap, CancellationToken cancellationToken = default) =>
        await (await HarnessQmpAsync(cancellationToken)).ExecuteAsync("block-dirty-bitmap-remove", new JsonObject { ["node"] = "fmt-" + target, ["name"] = bitmap }, cancellationToken);

    public override async Task CreateForeignCheckpointAsync(string name, CancellationToken cancellationToken = default)
    {
        var qmp = await HarnessQmpAsync(cancellationToken);
        foreach (var disk in _domain.Disks)
        {
            await qmp.ExecuteAsync("block-dirty-bitmap-add", new JsonObject { ["node"] = disk.NodeName, ["name"] = name, ["persistent"] = true }, cancellationToken);
        }
    }

    public override async Task ResizeDiskAsync(string target, ulong newSize, CancellationToken cancellationToken = default)
    {
        // Grown while the domain is down (a running guest export does not share the resize permission in QEMU 7.2).
        RequireLaunched("a resize");
        var disk = _domain.Disks.Single(d => d.Target == target);
        await SignalAndWaitAsync("-TERM", cancellationToken);
        await ProcessRunner.RunAsync("qemu-img", ["resize", "-q", "-f", disk.Format, disk.ImagePath!, newSize.ToString(CultureInfo.InvariantCulture)], cancellationToken);
        await _driver.StartAsync(DomainId, paused: false, cancellationToken);
    }

    public override async Task ReplaceDiskAsync(string target, CancellationToken cancellationToken = default)
    {
        RequireLaunched("a disk replacement");
        var disk = _domain.Disks.Single(d => d.Target == target);
        await SignalAndWaitAsync("-TERM", cancellationToken);
        // Another image under the same path, as a restore from elsewhere or a conversion would leave it.
        var replacement = await QemuImage.CreateQcow2Async(disk.ImagePath! + ".new", 16 * 1024 * 1024, cancellationToken);
        File.Move(replacement, disk.ImagePath!, overwrite: true);
        await _driver.StartAsync(DomainId, paused: false, cancellationToken);
    }

    public override async Task ReopenDriverAsync(CancellationToken cancellationToken = default)
    {
        // A dying process releases nothing: the old driver only closes its monitor connection.
        await _driver.DisposeAsync();
        _driver = new QemuDriver(_options);
    }

    public override async ValueTask DisposeAsync()
    {
        try
        {
            if (_qmp is not null)
            {
                await _qmp.DisposeAsync();
                _qmp = null;
            }

            await _driver.DisposeAsync();
            if (_process is not null)
            {
                await _process.DisposeAsync();
            }
            else if (LivePid() is not null)
            {
                await SignalAndWaitAsync("-KILL", CancellationToken.None);
            }
        }
        finally
        {
            _directory.Dispose();
        }
    }

    private static ManagedProcess StartInPrivateNamespace(QemuDomainOptions domain, string[] monitor)
    {
        List<string> arguments =
        [
            "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=1m drydock-fleece \"$0\" && exec \"$@\"", domain.FleeceDirectory,
            "qemu-storage-daemon",
            "--chardev", $"socket,id=ddqmp,path={domain.QmpSocketPath},server=on,wait=off", "--monitor", "chardev=ddqmp",
            "--pidfile", domain.PidFile!,
            "--nbd-server", $"addr.type=unix,addr.path={domain.NbdSocketPath}",
            .. monitor,
        ];
        foreach (var disk in domain.Disks)
        {
            arguments.AddRange([
                "--blockdev", $"driver=file,node-name={disk.NodeName}-file,filename={disk.ImagePath},discard=unmap",
                "--blockdev", $"driver={disk.Format},node-name={disk.NodeName},file={disk.NodeName}-file,discard=unmap",
                "--blockdev", $"driver=raw,node-name={disk.FrontNodeName},file={disk.NodeName},discard=unmap",
                "--export", $"type=nbd,id=ddguest-{disk.Target},node-name={disk.FrontNodeName},name={disk.Target},writable=on",
            ]);
        }

        return ManagedProcess.Start("unshare", arguments);
    }

    private static string? ChildOf(JsonElement graph, string parent, string role)
    {
        var ids = graph.GetProperty("nodes").EnumerateArray().ToDictionary(n => n.GetProperty("id").GetInt64(), n => n.GetProperty("name").GetString());
        var parentId = ids.FirstOrDefault(p => p.Value == parent).Key;
        foreach (var edge in graph.GetProperty("edges").EnumerateArray())
        {
            if (edge.GetProperty("parent").GetInt64() == parentId && edge.GetProperty("name").GetString() == role)
            {
                return ids[edge.GetProperty("child").GetInt64()];
            }
        }

        return null;
    }

    private void RequireLaunched(string what)
    {
        if (_process is not null)
        {
            Unsupported(what + " of a domain the harness launched itself");
        }
    }

    private async Task<NbdClient> GuestAsync(string target, CancellationToken cancellationToken) =>
        await NbdClient.ConnectAsync(NbdUri.ForUnixSocket(_domain.NbdSocketPath, target), cancellationToken: cancellationToken);

    /// <summary>The harness's own monitor (a second QMP monitor of the daemon).</summary>
    internal async Task<QmpClient> HarnessQmpAsync(CancellationToken cancellationToken)
    {
        if (_qmp is not null)
        {
            try
            {
                await _qmp.ExecuteAsync("query-version", cancellationToken: cancellationToken);
                return _qmp;
            }
            catch (IOException)
            {
                await _qmp.DisposeAsync();
                _qmp = null;
            }
        }

        return _qmp = await QmpClient.ConnectAsync(_harnessMonitor, cancellationToken);
    }

    internal int? LivePid()
    {
        if (!File.Exists(_domain.PidFile))
        {
            return null;
        }

        var pid = int.Parse(File.ReadAllText(_domain.PidFile).Trim(), CultureInfo.InvariantCulture);
        return ProcessState.IsAlive(pid) ? pid : null;
    }

    private async Task SignalAndWaitAsync(string signal, CancellationToken cancellationToken)
    {
        if (LivePid() is not { } pid)
        {
            return;
        }

        await ProcessRunner.RunAsync("kill", [signal, pid.ToString(CultureInfo.InvariantCulture)], cancellationToken);
        while (LivePid() is not null)
        {
            await Task.Delay(20, cancellationToken);
        }

        if (_qmp is not null)
        {
            await _qmp.DisposeAsync();
            _qmp = null;
        }
    }
}

public sealed class QemuContractTests : HypervisorContractTests
{
    protected override async Task<ContractHarness> CreateHarnessAsync(ContractDomainSpec spec, CancellationToken cancellationToken) =>
        await QemuContractHarness.CreateAsync(spec, cancellationToken);
}
