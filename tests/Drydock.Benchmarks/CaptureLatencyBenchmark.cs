using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Drydock.Hypervisor;
using Drydock.Hypervisor.Qemu;
using Drydock.Hypervisor.Qemu.Qmp;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.TestKit;
using QmpClient = Drydock.Hypervisor.Qemu.Qmp.QmpClient;

namespace Drydock.Benchmarks;

/// <summary>
/// Capture set-up and tear-down latency per domain of the QEMU driver (begin → export accepts a client → released)
/// against the bare QMP command sequence of the same block snapshot (REAL-STACK.md: fleece image, copy-before-write
/// filter, front node re-pointed, snapshot-access node, NBD export, and back) sent over a second monitor of the same
/// qemu-storage-daemon. The bare sequence is what any tool must send at least; the ratio is the driver's overhead
/// (its graph checks, its capture record, bitmap work for incrementals). Runs alternate so load drifts hit both.
/// </summary>
internal sealed class CaptureLatencyBenchmark(int runs, TextWriter log)
{
    private const long MiB = 1024 * 1024;

    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        var rows = new List<Row>();
        foreach (var disks in new[] { 1, 4 })
        {
            await using var domain = await BenchDomain.StartAsync(disks, cancellationToken);
            foreach (var incremental in new[] { false, true })
            {
                rows.Add(await MeasureAsync(domain, incremental, cancellationToken));
            }
        }

        return Report(rows);
    }

    private async Task<Row> MeasureAsync(BenchDomain domain, bool incremental, CancellationToken cancellationToken)
    {
        var scenario = $"{domain.Targets.Count} disk{(domain.Targets.Count == 1 ? string.Empty : "s")}, {(incremental ? "incremental + new checkpoint" : "full")}";
        await log.WriteLineAsync($"{scenario}: {runs} runs each");
        var ours = new List<double>();
        var bare = new List<double>();
        string? checkpoint = null;
        if (incremental)
        {
            checkpoint = DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch);
            await domain.Driver.CreateCheckpointAsync(domain.Id, checkpoint, null, cancellationToken);
        }

        for (var run = -2; run < runs; run++)
        {
            // Two warm-up rounds are not counted.
            var (a, b) = (await DriverOnceAsync(domain, checkpoint, cancellationToken), await BareOnceAsync(domain, checkpoint, cancellationToken));
            if (run >= 0)
            {
                ours.Add(a);
                bare.Add(b);
            }
        }

        if (checkpoint is not null)
        {
            await domain.Driver.DeleteCheckpointAsync(domain.Id, checkpoint, CheckpointDeleteMode.All, cancellationToken);
        }

        return new Row(scenario, Median(bare), Median(ours), Percentile(ours, 0.9));
    }

    private static async Task<double> DriverOnceAsync(BenchDomain domain, string? since, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var request = since is null
            ? CaptureRequest.Full(domain.Id, domain.Targets)
            : CaptureRequest.Since(domain.Id, since, domain.Targets, DrydockNames.NewCheckpointName(DateTimeOffset.UnixEpoch));
        var capture = await domain.Driver.BeginCaptureAsync(request, cancellationToken);
        foreach (var disk in capture.Disks)
        {
            await ProbeAsync(disk.Endpoint, cancellationToken);
        }

        // Abandoned: the new checkpoint goes again, so every run starts from the same state.
        await domain.Driver.ReleaseCaptureAsync(domain.Id, capture.Id, CaptureOutcome.Abandoned, cancellationToken);
        return Stopwatch.GetElapsedTime(started).TotalMilliseconds;
    }

    private static async Task<double> BareOnceAsync(BenchDomain domain, string? since, CancellationToken cancellationToken)
    {
        var qmp = domain.Bare;
        var started = Stopwatch.GetTimestamp();
        var newCheckpoint = since is null ? null : "bare-" + DrydockNames.RandomSuffix();
        for (var i = 0; i < domain.Targets.Count; i++)
        {
            await qmp.CreateImageAsync($"bare-mk{i}", new JsonObject { ["driver"] = "file", ["filename"] = domain.Fleece(i), ["size"] = 256 * MiB }, TimeSpan.FromSeconds(60), cancellationToken);
            await qmp.BlockdevAddAsync(new JsonObject { ["driver"] = "raw", ["node-name"] = $"bare-fl{i}", ["file"] = new JsonObject { ["driver"] = "file", ["filename"] = domain.Fleece(i) } }, cancellationToken);
        }

        if (newCheckpoint is not null)
        {
            await qmp.TransactionAsync(Enumerable.Range(0, domain.Targets.Count).Select(i => ("block-dirty-bitmap-add", QmpCommands.BitmapAdd($"fmt{i}", newCheckpoint, persistent: true))), cancellationToken);
        }

        for (var i = 0; i < domain.Targets.Count; i++)
        {
            await qmp.BlockdevAddAsync(new JsonObject { ["driver"] = "copy-before-write", ["node-name"] = $"bare-cbw{i}", ["file"] = $"fmt{i}", ["target"] = $"bare-fl{i}", ["on-cbw-error"] = "break-snapshot", ["cbw-timeout"] = 30 }, cancellationToken);
        }

        await qmp.BlockdevReopenAsync(Enumerable.Range(0, domain.Targets.Count).Select(i => new JsonObject { ["driver"] = "raw", ["node-name"] = $"front{i}", ["file"] = $"bare-cbw{i}", ["discard"] = "unmap" }), cancellationToken);
        if (since is not null)
        {
            await qmp.TransactionAsync(Enumerable.Range(0, domain.Targets.Count).SelectMany(i => new[]
            {
                ("block-dirty-bitmap-add", QmpCommands.BitmapAdd($"fmt{i}", $"bare-t{i}", persistent: false, disabled: true)),
                ("block-dirty-bitmap-merge", QmpCommands.BitmapMerge($"fmt{i}", $"bare-t{i}", [since])),
            }), cancellationToken);
        }

        for (var i = 0; i < domain.Targets.Count; i++)
        {
            await qmp.BlockdevAddAsync(new JsonObject { ["driver"] = "snapshot-access", ["node-name"] = $"bare-snap{i}", ["file"] = $"bare-cbw{i}" }, cancellationToken);
            await qmp.AddNbdExportAsync($"bare-{i}", $"bare-snap{i}", $"bare-{i}", writable: false, since is null ? null : [($"fmt{i}", $"bare-t{i}")], cancellationToken);
            await ProbeAsync(NbdUri.ForUnixSocket(domain.NbdSocket, $"bare-{i}"), cancellationToken);
        }

        for (var i = 0; i < domain.Targets.Count; i++)
        {
            await qmp.DeleteExportAsync($"bare-{i}", TimeSpan.FromSeconds(60), cancellationToken);
            await qmp.BlockdevDelAsync($"bare-snap{i}", cancellationToken);
        }

        await qmp.BlockdevReopenAsync(Enumerable.Range(0, domain.Targets.Count).Select(i => new JsonObject { ["driver"] = "raw", ["node-name"] = $"front{i}", ["file"] = $"fmt{i}", ["discard"] = "unmap" }), cancellationToken);
        for (var i = 0; i < domain.Targets.Count; i++)
        {
            await qmp.BlockdevDelAsync($"bare-cbw{i}", cancellationToken);
            if (since is not null)
            {
                await qmp.RemoveBitmapAsync($"fmt{i}", $"bare-t{i}", cancellationToken);
            }

            if (newCheckpoint is not null)
            {
                await qmp.RemoveBitmapAsync($"fmt{i}", newCheckpoint, cancellationToken);
            }

            await qmp.BlockdevDelAsync($"bare-fl{i}", cancellationToken);
            File.Delete(domain.Fleece(i));
        }

        return Stopwatch.GetElapsedTime(started).TotalMilliseconds;
    }

    /// <summary>"Export ready": a client completes the handshake.</summary>
    private static async Task ProbeAsync(NbdUri endpoint, CancellationToken cancellationToken)
    {
        await using var client = await NbdClient.ConnectAsync(endpoint, cancellationToken: cancellationToken);
    }

    private static double Median(List<double> values) => Percentile(values, 0.5);

    private static double Percentile(List<double> values, double p)
    {
        var sorted = values.Order().ToList();
        return sorted[(int)Math.Min(sorted.Count - 1, Math.Round(p * (sorted.Count - 1)))];
    }

    private string Report(List<Row> rows)
    {
        var invariant = CultureInfo.InvariantCulture;
        var text = new StringBuilder();
        text.Append(invariant, $"Command: `dotnet run -c Release --project tests/Drydock.Benchmarks -- capture-latency --runs {runs} --write`.\n\n");
        text.Append(invariant, $"Capture set-up + tear-down per domain (begin → every export accepts a client → released), qemu-storage-daemon {QemuVersion()}, ");
        text.Append(invariant, $"{runs} alternating runs per row after 2 warm-ups, on a shared 2-core machine (load average {LoadAverage()} at the end). ");
        text.Append("The peer is the bare QMP sequence of the same block snapshot over a second monitor (the least any tool sends); the ratio is the driver's overhead: ");
        text.Append("a liveness check of the monitor, the block graph read to refuse writers that bypass the filter, the capture's record file, and on release nothing else when the capture is known. ");
        text.Append("The libvirt driver's comparison with `virsh backup-begin` + `virsh domjobabort` belongs to that driver's work.\n\n");
        text.Append("| scenario | bare QMP median ms | Drydock driver median ms | ratio | Drydock p90 ms |\n|---|---|---|---|---|\n");
        foreach (var row in rows)
        {
            text.Append(invariant, $"| {row.Scenario} | {row.Bare:0.0} | {row.Ours:0.0} | {row.Ours / row.Bare:0.00} | {row.OursP90:0.0} |\n");
        }

        return text.ToString();
    }

    private static string QemuVersion()
    {
        try
        {
            return ProcessRunner.RunAsync("qemu-storage-daemon", ["--version"]).GetAwaiter().GetResult().StandardOutput.Split('\n')[0].Replace("qemu-storage-daemon version ", string.Empty, StringComparison.Ordinal);
        }
        catch (Exception ex) when (ex is ProcessFailedException or ToolNotFoundException)
        {
            return "?";
        }
    }

    private static string LoadAverage() => File.ReadAllText("/proc/loadavg").Split(' ')[0];

    private sealed record Row(string Scenario, double Bare, double Ours, double OursP90);

    /// <summary>A qemu-storage-daemon launched by the driver, with a second monitor for the bare sequence.</summary>
    private sealed class BenchDomain : IAsyncDisposable
    {
        private readonly TestDirectory _directory;

        private BenchDomain(TestDirectory directory, QemuDriver driver, QmpClient bare, QemuDomainOptions options)
        {
            _directory = directory;
            Driver = driver;
            Bare = bare;
            Id = options.Id;
            Targets = [.. options.Disks.Select(d => d.Target)];
            NbdSocket = options.NbdSocketPath;
        }

        public QemuDriver Driver { get; }

        public QmpClient Bare { get; }

        public string Id { get; }

        public IReadOnlyList<string> Targets { get; }

        public string NbdSocket { get; }

        public string Fleece(int disk) => _directory.File(string.Create(CultureInfo.InvariantCulture, $"bare-{disk}.fleece"));

        public static async Task<BenchDomain> StartAsync(int disks, CancellationToken cancellationToken)
        {
            var directory = TestDirectory.Create("bench-capture");
            var bareMonitor = directory.SocketPath("bare.sock");
            var domain = new QemuDomainOptions
            {
                Id = "bench",
                QmpSocketPath = directory.SocketPath("qmp.sock"),
                NbdSocketPath = directory.SocketPath("nbd.sock"),
                FleeceDirectory = directory.CreateSubdirectory("fleece"),
                PidFile = directory.File("qsd.pid"),
                Launch = new QemuLaunchOptions(),
            };
            domain.Launch.ExtraArguments.Add("--chardev");
            domain.Launch.ExtraArguments.Add($"socket,id=bare,path={bareMonitor},server=on,wait=off");
            domain.Launch.ExtraArguments.Add("--monitor");
            domain.Launch.ExtraArguments.Add("chardev=bare");
            for (var i = 0; i < disks; i++)
            {
                var image = await QemuImage.CreateQcow2Async(directory.File($"d{i}.qcow2"), 256 * MiB, cancellationToken);
                domain.Disks.Add(new QemuDiskOptions { Target = $"vd{(char)('a' + i)}", NodeName = $"fmt{i}", FrontNodeName = $"front{i}", ImagePath = image, GuestExportName = $"vd{(char)('a' + i)}" });
            }

            var options = new QemuDriverOptions();
            options.Domains.Add(domain);
            var driver = new QemuDriver(options);
            await driver.StartAsync(domain.Id, paused: false, cancellationToken);
            var bare = await QmpClient.ConnectAsync(bareMonitor, cancellationToken: cancellationToken);
            return new BenchDomain(directory, driver, bare, domain);
        }

        public async ValueTask DisposeAsync()
        {
            await Bare.DisposeAsync();
            await Driver.DestroyAsync(Id);
            await Driver.DisposeAsync();
            _directory.Dispose();
        }
    }
}
