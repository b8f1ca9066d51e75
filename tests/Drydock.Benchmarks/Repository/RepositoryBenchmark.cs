using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Drydock.Repository;
using Drydock.Repository.Write;
using Drydock.Storage;
using Drydock.Storage.Azure;
using Drydock.Storage.FileSystem;
using Drydock.TestKit.Azurite;

namespace Drydock.Benchmarks.Repository;

/// <summary>
/// The repository benchmark (issue "The backup repository", docs/BENCHMARKS.md "## Repository"):
/// write and read/verify paths to the local backend against <c>zstd -1</c> + <c>sha256sum</c> on the same bytes, for
/// incompressible and VM-like data and 1/2/4 MiB chunks; then Azure requests per GiB through Azurite against one
/// large Put Block upload. Each Drydock run is a child process so its peak RSS (VmHWM) is its own.
/// <code>
/// Drydock.Benchmarks repository [--size-mib 2048] [--azurite-mib 256] [--chunk-mib 1,2,4] [--reps 3] [--work DIR]
/// </code>
/// </summary>
public static class RepositoryBenchmark
{
    private const string Passphrase = "benchmark";

    public static async Task<int> RunAsync(string[] args)
    {
        if (args[0] == "repository-child")
        {
            return await ChildAsync(args[1..]);
        }

        var sizeMiB = Option(args, "--size-mib", 2048);
        var azuriteMiB = Option(args, "--azurite-mib", 256);
        var chunkMiBs = (OptionText(args, "--chunk-mib") ?? "1,2,4").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var reps = Option(args, "--reps", 3);
        var work = OptionText(args, "--work") ?? Path.Combine(Path.GetTempPath(), "drydock-bench-repo");
        Directory.CreateDirectory(work);
        var report = new StringBuilder();
        report.AppendLine(CultureInfo.InvariantCulture, $"Machine: {Environment.ProcessorCount} cores, load average at start {File.ReadAllText("/proc/loadavg").Split(' ')[0]}; data {sizeMiB} MiB per set; medians of {reps} adjacent peer/Drydock pairs.");
        report.AppendLine();
        report.AppendLine("| data | chunk | Drydock write s | peer write s | write ratio (peer/Drydock) | Drydock read+verify s | peer read s | read ratio | stored/input | peak RSS write/read MiB |");
        report.AppendLine("|---|---|---|---|---|---|---|---|---|---|");

        foreach (var (dataset, generator) in new (string, Action<string, long>)[] { ("incompressible", GenerateRandom), ("vm-like mix", GenerateMix) })
        {
            var file = Path.Combine(work, dataset.Replace(' ', '-') + ".img");
            if (!File.Exists(file) || new FileInfo(file).Length != sizeMiB * 1024L * 1024)
            {
                generator(file, sizeMiB * 1024L * 1024);
            }

            // Each repetition runs the peer right next to Drydock on the same bytes (warm cache), so the ratio
            // compares like moments on a shared, noisy machine; the table shows medians over the repetitions.
            var zst = Path.Combine(work, "peer.zst");
            await RunAsync("bash", "-c", $"cat '{file}' > /dev/null");
            foreach (var chunkMiB in chunkMiBs)
            {
                var rows = new List<(double PeerWrite, double Write, double PeerRead, double Read, double Stored, double WritePeak, double ReadPeak)>();
                for (var rep = 0; rep < reps; rep++)
                {
                    var repo = Path.Combine(work, "repo");
                    if (Directory.Exists(repo))
                    {
                        Directory.Delete(repo, recursive: true);
                    }

                    var peerWrite = await TimeAsync("bash", "-c", $"set -o pipefail; tee >(sha256sum > /dev/null) < '{file}' | zstd -1 -T0 -q -c > '{zst}'");
                    var write = await ChildProcessAsync("write", file, repo, (chunkMiB * 1024 * 1024).ToString(CultureInfo.InvariantCulture));
                    var peerRead = await TimeAsync("bash", "-c", $"set -o pipefail; zstd -d -q -c '{zst}' | sha256sum > /dev/null");
                    var read = await ChildProcessAsync("read", file, repo, "0");
                    var stored = Directory.EnumerateFiles(Path.Combine(repo, "chunks"), "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
                    Directory.Delete(repo, recursive: true);
                    File.Delete(zst);
                    rows.Add((peerWrite, write.Seconds, peerRead, read.Seconds, (double)stored / new FileInfo(file).Length, write.PeakMiB, read.PeakMiB));
                    Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{dataset} {chunkMiB} MiB rep {rep}: peer write {peerWrite:F2} s, Drydock {write.Seconds:F2} s; peer read {peerRead:F2} s, Drydock {read.Seconds:F2} s"));
                }

                report.AppendLine(CultureInfo.InvariantCulture,
                    $"| {dataset} | {chunkMiB} MiB | {Median(rows.Select(r => r.Write)):F2} | {Median(rows.Select(r => r.PeerWrite)):F2} | **{Median(rows.Select(r => r.PeerWrite / r.Write)):F2}** | {Median(rows.Select(r => r.Read)):F2} | {Median(rows.Select(r => r.PeerRead)):F2} | **{Median(rows.Select(r => r.PeerRead / r.Read)):F2}** | {rows[0].Stored:F3} | {rows.Max(r => r.WritePeak):F0} / {rows.Max(r => r.ReadPeak):F0} |");
            }
        }

        report.AppendLine();
        report.AppendLine(await AzuriteAsync(Path.Combine(work, "vm-like-mix.img"), azuriteMiB, chunkMiBs));
        Console.WriteLine(report.ToString());
        return 0;
    }

    private static async Task<string> AzuriteAsync(string file, int mib, int[] chunkMiBs)
    {
        var bytes = new byte[mib * 1024L * 1024];
        await using (var source = File.OpenRead(file))
        {
            await source.ReadExactlyAsync(bytes);
        }

        var azurite = new AzuriteFixture();
        await azurite.InitializeAsync();
        var lines = new StringBuilder();
        lines.AppendLine(CultureInfo.InvariantCulture, $"Azurite ({mib} MiB of the VM-like mix, encrypted, zstd -1):");
        lines.AppendLine();
        lines.AppendLine("| upload | requests | requests per GiB | seconds | time ratio (one large upload / this) |");
        lines.AppendLine("|---|---|---|---|---|");
        try
        {
            var account = AzureStorageAccount.Parse(azurite.ConnectionString);

            // Baseline: the same bytes as one blob, one Put Block + one Put Block List.
            using var baseline = new AzureBlobStore(account, new AzureBlobStoreOptions { Container = "baseline", SingleUploadLimit = 1, BlockSize = bytes.Length });
            await baseline.CreateContainerIfNotExistsAsync();
            var before = baseline.RequestCount;
            var watch = Stopwatch.StartNew();
            await baseline.PutAsync("whole.img", bytes, BlobCondition.CreateOnly);
            var baseSeconds = watch.Elapsed.TotalSeconds;
            var baseRequests = baseline.RequestCount - before;
            lines.AppendLine(CultureInfo.InvariantCulture, $"| one Put Block + Put Block List | {baseRequests} | {baseRequests * 1024.0 / mib:F1} | {baseSeconds:F2} | 1.00 |");

            foreach (var chunkMiB in chunkMiBs)
            {
                using var store = new AzureBlobStore(account, new AzureBlobStoreOptions { Container = azurite.NewContainerName("bench") });
                await store.CreateContainerIfNotExistsAsync();
                using var repository = await BackupRepository.InitAsync(store, Passphrase, new RepositoryInitOptions { ChunkSize = chunkMiB * 1024 * 1024, KdfIterations = 1000 });
                before = store.RequestCount;
                watch.Restart();
                await using (var session = await repository.BeginPointAsync(new PointRequest { DomainId = Guid.NewGuid(), DomainName = "bench", WriterId = "bench" }))
                {
                    var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "bench", VirtualSize = bytes.Length });
                    await disk.WriteAllAsync(new MemoryStream(bytes));
                    await session.CommitAsync();
                }

                var seconds = watch.Elapsed.TotalSeconds;
                var requests = store.RequestCount - before;
                lines.AppendLine(CultureInfo.InvariantCulture, $"| Drydock backup, {chunkMiB} MiB chunks | {requests} | {requests * 1024.0 / mib:F1} | {seconds:F2} | {baseSeconds / seconds:F2} |");
            }
        }
        finally
        {
            await azurite.DisposeAsync();
        }

        return lines.ToString();
    }

    private static async Task<int> ChildAsync(string[] args)
    {
        var (mode, file, repoPath, chunkSize) = (args[0], args[1], args[2], int.Parse(args[3], CultureInfo.InvariantCulture));
        // DRYDOCK_BENCH_NO_FSYNC=1 measures the pipeline without fsync (the peers do not fsync either).
        var store = new FileSystemBlobStore(new FileSystemBlobStoreOptions { Root = repoPath, Durable = Environment.GetEnvironmentVariable("DRYDOCK_BENCH_NO_FSYNC") != "1" });
        var options = new RepositoryOptions();
        var watch = new Stopwatch();
        if (mode == "write")
        {
            using var repository = await BackupRepository.InitAsync(store, Passphrase, new RepositoryInitOptions { ChunkSize = chunkSize, KdfIterations = 1000 }, options);
            var length = new FileInfo(file).Length;
            watch.Start();
            await using var source = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.Asynchronous | FileOptions.SequentialScan);
            await using var session = await repository.BeginPointAsync(new PointRequest { DomainId = Guid.Parse("00000000-0000-0000-0000-0000000000be"), DomainName = "bench", WriterId = "bench" });
            var disk = await session.AddDiskAsync(new DiskRequest { Name = "vda", Identity = "bench", VirtualSize = length });
            await disk.WriteAllAsync(source);
            await session.CommitAsync();
        }
        else
        {
            using var repository = await BackupRepository.OpenAsync(store, Passphrase, options);
            watch.Start();
            var point = await repository.OpenLatestAsync("default", Guid.Parse("00000000-0000-0000-0000-0000000000be"));
            var disk = await point!.OpenDiskAsync("vda");
            await disk.CopyToAsync(Stream.Null);
        }

        var seconds = watch.Elapsed.TotalSeconds;
        Console.WriteLine(JsonSerializer.Serialize(new ChildResult(seconds, PeakRssMiB()), ChildJson.Default.ChildResult));
        return 0;
    }

    private static async Task<ChildResult> ChildProcessAsync(string mode, string file, string repo, string chunk)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { "repository-child", mode, file, repo, chunk })
        {
            start.ArgumentList.Add(a);
        }

        using var process = Process.Start(start)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"child {mode} failed ({process.ExitCode}): {output}");
        }

        return JsonSerializer.Deserialize(output.Trim().Split('\n')[^1], ChildJson.Default.ChildResult)!;
    }

    private static async Task<double> TimeAsync(string file, params string[] args)
    {
        var watch = Stopwatch.StartNew();
        await RunAsync(file, args);
        return watch.Elapsed.TotalSeconds;
    }

    private static async Task RunAsync(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { UseShellExecute = false };
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }

        using var process = Process.Start(start)!;
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {process.ExitCode}");
        }
    }

    private static double PeakRssMiB()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
            }
        }

        return double.NaN;
    }

    private static void GenerateRandom(string path, long size)
    {
        using var output = File.Create(path);
        var block = new byte[4 << 20];
        for (long written = 0; written < size; written += block.Length)
        {
            RandomNumberGenerator.Fill(block);
            output.Write(block, 0, (int)Math.Min(block.Length, size - written));
        }
    }

    /// <summary>A VM-like image: per 1 MiB block, 35 % zeros, 25 % text (log and config lines), 20 % executable-like
    /// bytes (half zeros, small values), 10 % random (compressed or encrypted files), 10 % copies of an earlier block.</summary>
    private static void GenerateMix(string path, long size)
    {
        const int Block = 1 << 20;
        using var output = File.Create(path);
        var random = new Random(20260301);
        var block = new byte[Block];
        var history = new List<byte[]>();
        var words = "kernel: eth0 link up 1000Mbps full duplex systemd[1]: Started Session of user root. /usr/lib/x86_64-linux-gnu libc.so.6 GLIBC_2.36 ERROR WARN INFO connection from 10.0.0.17 port 5432 accepted config value=true timeout=30s".Split(' ');
        for (long written = 0; written < size; written += Block)
        {
            var kind = random.Next(100);
            if (kind < 35)
            {
                Array.Clear(block);
            }
            else if (kind < 60)
            {
                var position = 0;
                while (position < Block)
                {
                    var line = Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"2026-03-01T12:{random.Next(60):D2}:{random.Next(60):D2} {words[random.Next(words.Length)]} {words[random.Next(words.Length)]} {random.Next(100000)}\n"));
                    var n = Math.Min(line.Length, Block - position);
                    line.AsSpan(0, n).CopyTo(block.AsSpan(position));
                    position += n;
                }
            }
            else if (kind < 80)
            {
                for (var i = 0; i < Block; i++)
                {
                    block[i] = random.Next(2) == 0 ? (byte)0 : (byte)random.Next(random.Next(2) == 0 ? 16 : 256);
                }
            }
            else if (kind < 90 || history.Count == 0)
            {
                random.NextBytes(block);
            }
            else
            {
                history[random.Next(history.Count)].CopyTo(block, 0);
            }

            if (history.Count < 64 && kind >= 35)
            {
                history.Add((byte[])block.Clone());
            }

            output.Write(block, 0, (int)Math.Min(Block, size - written));
        }
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static int Option(string[] args, string name, int fallback)
        => OptionText(args, name) is { } text ? int.Parse(text, CultureInfo.InvariantCulture) : fallback;

    private static string? OptionText(string[] args, string name)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

/// <summary>What a child run reports.</summary>
/// <param name="Seconds">Wall time of the measured part.</param>
/// <param name="PeakMiB">Peak resident set (VmHWM).</param>
public sealed record ChildResult(double Seconds, double PeakMiB);

/// <summary>JSON for <see cref="ChildResult"/>.</summary>
[System.Text.Json.Serialization.JsonSerializable(typeof(ChildResult))]
public sealed partial class ChildJson : System.Text.Json.Serialization.JsonSerializerContext;
