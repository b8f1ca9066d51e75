using System.Globalization;
using System.Text;
using Drydock.TestKit;

namespace Drydock.Benchmarks;

/// <summary>
/// Whole-process comparison of <c>drydock nbd copy URI null:</c> with <c>nbdcopy URI null:</c> on the same
/// exports, in the same run, alternating tools so drifts in machine load hit both: a dense incompressible
/// image over a Unix socket and over TCP, a sparse image (5 % data), an image of allocated zeroes, and the
/// dense image behind nbdkit's delay filter (1 ms per read), which only pipelining can hide.
/// </summary>
internal sealed class NbdCopyBenchmark
{
    private const long MiB = 1024 * 1024;
    private readonly long _size;
    private readonly int _runs;
    private readonly string _drydock;
    private readonly TextWriter _log;

    public NbdCopyBenchmark(long size, int runs, string drydock, TextWriter log)
    {
        _size = size;
        _runs = runs;
        _drydock = drydock;
        _log = log;
    }

    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        using var directory = TestDirectory.Create("bench-nbd-copy");
        var dense = directory.File("dense.raw");
        var sparse = directory.File("sparse.raw");
        var zeros = directory.File("zeros.raw");
        await _log.WriteLineAsync($"creating {_size / MiB} MiB images in {directory.Path}");
        await CreateDenseAsync(dense, cancellationToken);
        await CreateSparseAsync(sparse, cancellationToken);
        await CreateZerosAsync(zeros, cancellationToken);

        var rows = new List<Row>();
        await using (var server = await ServeAsync(dense, ServerTransport.Unix, cancellationToken))
        {
            rows.Add(await CompareAsync("dense, Unix socket", server.Uri, Goal.Throughput(0.9), cancellationToken));
            await using var delayed = await NbdkitServer.StartAsync(
                NbdkitOptions.Nbd(server.SocketPath!, server.ExportName).WithDelay(read: TimeSpan.FromMilliseconds(1)), cancellationToken);
            rows.Add(await CompareAsync("dense, 1 ms delay per read (nbdkit delay filter)", delayed.Uri, Goal.Throughput(0.9), cancellationToken));
        }

        await using (var server = await ServeAsync(dense, ServerTransport.Tcp, cancellationToken))
        {
            rows.Add(await CompareAsync("dense, TCP loopback", server.Uri, Goal.Throughput(0.9), cancellationToken));
        }

        await using (var server = await ServeAsync(sparse, ServerTransport.Unix, cancellationToken))
        {
            rows.Add(await CompareAsync("sparse (5 % data), Unix socket", server.Uri, Goal.WallTime(1.1), cancellationToken));
        }

        await using (var server = await ServeAsync(zeros, ServerTransport.Unix, cancellationToken))
        {
            rows.Add(await CompareAsync("allocated zeroes, Unix socket", server.Uri, Goal.Throughput(0.9), cancellationToken));
        }

        return Report(rows);
    }

    private Task<QemuNbdServer> ServeAsync(string image, ServerTransport transport, CancellationToken cancellationToken)
        => QemuNbdServer.StartAsync(new QemuNbdOptions { ImagePath = image, Format = ImageFormat.Raw, ReadOnly = true, Transport = transport }, cancellationToken);

    private async Task<Row> CompareAsync(string scenario, string uri, Goal goal, CancellationToken cancellationToken)
    {
        var peerCommand = new[] { "nbdcopy", uri, "null:" };
        var ourCommand = new[] { _drydock, "nbd", "copy", uri, "null:" };
        var peer = new List<Sample>();
        var ours = new List<Sample>();

        // One untimed run of each warms the page cache and the servers.
        await TimeAsync(peerCommand, cancellationToken);
        await TimeAsync(ourCommand, cancellationToken);
        for (var run = 0; run < _runs; run++)
        {
            peer.Add(await TimeAsync(peerCommand, cancellationToken));
            ours.Add(await TimeAsync(ourCommand, cancellationToken));
        }

        var steady = await NbdCopySteadyState.MedianSecondsAsync(uri, _runs, cancellationToken);
        var row = new Row(scenario, string.Join(' ', peerCommand), Median(peer), Median(ours), ours.Max(s => s.PeakRssKiB), goal, steady);
        await _log.WriteLineAsync($"{scenario}: nbdcopy {row.Peer.Seconds:0.000} s, drydock {row.Ours.Seconds:0.000} s, ratio {row.Ratio:0.00} ({(row.Met ? "met" : "MISSED")}); in-process {steady:0.000} s, ratio {row.SteadyRatio:0.00}");
        return row;
    }

    private static async Task<Sample> TimeAsync(IReadOnlyList<string> command, CancellationToken cancellationToken)
    {
        // GNU time: elapsed seconds, peak RSS (KiB), user and system CPU seconds.
        var result = await ProcessRunner.RunAsync("/usr/bin/time", ["-f", "%e %M %U %S", .. command], new ProcessRunOptions { Timeout = TimeSpan.FromMinutes(10) }, cancellationToken);
        var last = result.StandardError.Trim().Split('\n')[^1].Split(' ');
        return new Sample(
            double.Parse(last[0], CultureInfo.InvariantCulture),
            long.Parse(last[1], CultureInfo.InvariantCulture),
            double.Parse(last[2], CultureInfo.InvariantCulture) + double.Parse(last[3], CultureInfo.InvariantCulture));
    }

    private static Sample Median(List<Sample> samples)
    {
        var sorted = samples.OrderBy(s => s.Seconds).ToList();
        return sorted[sorted.Count / 2];
    }

    private async Task CreateDenseAsync(string path, CancellationToken cancellationToken)
    {
        // Incompressible: a seeded generator, so every run measures the same bytes.
        await using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 0, FileOptions.Asynchronous);
        var buffer = new byte[8 * MiB];
        for (long at = 0; at < _size; at += buffer.Length)
        {
            TestData.Fill(buffer, at, seed: 2026);
            await file.WriteAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, _size - at)), cancellationToken);
        }
    }

    private async Task CreateSparseAsync(string path, CancellationToken cancellationToken)
    {
        // 5 % of the image as 1 MiB runs at seeded random places; the rest never written (holes).
        await using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 0, FileOptions.Asynchronous);
        file.SetLength(_size);
        var random = new Random(5);
        var chunks = _size / MiB;
        var buffer = new byte[MiB];
        foreach (var chunk in Enumerable.Range(0, (int)chunks).OrderBy(_ => random.Next()).Take((int)(chunks / 20)).Order())
        {
            TestData.Fill(buffer, chunk * MiB, seed: 5);
            await RandomAccess.WriteAsync(file.SafeFileHandle, buffer, chunk * MiB, cancellationToken);
        }
    }

    private async Task CreateZerosAsync(string path, CancellationToken cancellationToken)
    {
        await using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 0, FileOptions.Asynchronous);
        var buffer = new byte[8 * MiB];
        for (long at = 0; at < _size; at += buffer.Length)
        {
            await file.WriteAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, _size - at)), cancellationToken);
        }
    }

    private string Report(List<Row> rows)
    {
        var text = new StringBuilder();
        var invariant = CultureInfo.InvariantCulture;
        text.Append(invariant, $"Image size {_size / MiB} MiB in page cache, served read-only by `qemu-nbd -r -f raw -t -e 16` (nbdkit 1.32 for the delay row); ");
        text.Append(invariant, $"median of {_runs} alternating runs per tool after one warm-up each; {Environment.ProcessorCount} cores; ");
        text.Append(invariant, $"load average at the end {File.ReadAllText("/proc/loadavg").Split(' ')[0]}.\n");
        text.Append("Both tools with their default settings; drydock built by `deploy/publish` (`dotnet publish -c Release -r linux-x64 --self-contained true -p:PublishReadyToRun=true -p:PublishReadyToRunComposite=true`) and started through its apphost. Ratio: throughput ratio (nbdcopy time ÷ drydock time) for the dense and zero rows, ");
        text.Append("wall-time ratio (drydock ÷ nbdcopy) for the sparse row. The in-process columns repeat the same copy inside one ");
        text.Append("process (median after a warm-up, as a long-running silo runs it) and compare it with the same nbdcopy runs: the ");
        text.Append("difference between the two ratios is process start-up.\n\n");
        text.Append("| scenario | peer command | nbdcopy s | drydock s | ratio | target | met | in-process drydock s | in-process ratio | drydock CPU s | nbdcopy CPU s | drydock peak RSS |\n");
        text.Append("|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|\n");
        foreach (var row in rows)
        {
            text.Append(invariant, $"| {row.Scenario} | `{row.PeerCommand}` | {row.Peer.Seconds:0.000} | {row.Ours.Seconds:0.000} | {row.Ratio:0.00} | {row.Goal.Describe()} | {(row.Met ? "yes" : "**no**")} | {row.SteadySeconds:0.000} | {row.SteadyRatio:0.00} | {row.Ours.CpuSeconds:0.00} | {row.Peer.CpuSeconds:0.00} | {row.PeakRssKiB / 1024.0:0} MiB |\n");
        }

        return text.ToString();
    }

    private readonly record struct Sample(double Seconds, long PeakRssKiB, double CpuSeconds);

    private sealed record Row(string Scenario, string PeerCommand, Sample Peer, Sample Ours, long PeakRssKiB, Goal Goal, double SteadySeconds)
    {
        public double Ratio => Goal.IsThroughput ? Peer.Seconds / Ours.Seconds : Ours.Seconds / Peer.Seconds;

        public double SteadyRatio => Goal.IsThroughput ? Peer.Seconds / SteadySeconds : SteadySeconds / Peer.Seconds;

        public bool Met => (Goal.IsThroughput ? Ratio >= Goal.Target : Ratio <= Goal.Target) && PeakRssKiB < 128 * 1024;
    }

    private sealed record Goal(bool IsThroughput, double Target)
    {
        public static Goal Throughput(double atLeast) => new(true, atLeast);

        public static Goal WallTime(double atMost) => new(false, atMost);

        public string Describe() => IsThroughput
            ? string.Create(CultureInfo.InvariantCulture, $"≥ {Target:0.0}×, RSS < 128 MiB")
            : string.Create(CultureInfo.InvariantCulture, $"≤ {Target:0.0}× time, RSS < 128 MiB");
    }
}
