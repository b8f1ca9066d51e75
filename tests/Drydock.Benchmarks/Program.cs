using System.Globalization;
using Drydock.Benchmarks;

// Whole-process benchmarks against peer tools. Results go to standard output as a Markdown section and,
// with --write, into docs/BENCHMARKS.md between the scenario's markers.
//
//   dotnet run -c Release --project tests/Drydock.Benchmarks -- nbd-copy [--size-mib 2048] [--runs 3] [--write]
//
// drydock is measured as it is shipped: built by deploy/publish (self-contained, composite ReadyToRun), started through its apphost.
//
//   ... -- runtime [options]        grain runtime turns/s (Runtime/RuntimeBenchmark.cs)
//   ... -- repository [options]     repository write/read paths vs zstd + sha256sum (Repository/)
//   ... -- capture-latency [--runs 20] [--write]   QEMU driver capture set-up + tear-down (CaptureLatencyBenchmark.cs)
//   ... -- libvirt-capture-latency [--runs 10] [--write]   libvirt driver vs virsh (LibvirtCaptureLatencyBenchmark.cs; root: starts libvirtd)
//   ... -- backup-restore [--size-mib 2048] [--runs 3] [--work DIR] [--write]   issue 6: BackupPipeline vs nbdcopy, RestorePipeline vs qemu-img convert (Transfer/)
//   ... -- extent-planning [--extents 100000] [--runs 5] [--work DIR] [--write]   issue 6: block-status walk + ReadPlanner on 1 TiB vs nbdinfo --map (Transfer/)
//   ... -- chunk-path [--image random|mixed] [--stage nbd|writer|backup|restore|read] [--store memory|null|fs|fs-buffered] [--level 1] [--runs 3]   diagnostic: CPU per stage of the chunk path (Transfer/ChunkPathProfile.cs)
//   ... -- libvirt-backup [--size-mib 2048] [--runs 3] [--work DIR] [--write]   issue 6: BackupJob on libvirt vs virtnbdbackup (Transfer/; root: starts libvirtd)
switch (args.FirstOrDefault())
{
    case "runtime":
        return await Drydock.Benchmarks.Runtime.RuntimeBenchmark.RunAsync(args[1..]);
    case { } name when name.StartsWith("repository", StringComparison.Ordinal):
        return await Drydock.Benchmarks.Repository.RepositoryBenchmark.RunAsync(args);
    case "chunk-path":
        return await new Drydock.Benchmarks.Transfer.ChunkPathProfile(
            OptionText("--image") ?? "random", OptionText("--stage") ?? "backup", OptionText("--store") ?? "memory", Option("--level", 1), Option("--runs", 3), OptionText("--work") ?? "/var/tmp/drydock-bench-transfer", Console.Error).RunAsync(CancellationToken.None);
    case "nbd-copy-steady" when args.Length > 1:
        Console.Out.WriteLine($"{await NbdCopySteadyState.MedianSecondsAsync(args[1], Option("--runs", 5), CancellationToken.None):0.000}");
        return 0;
    case null or "-h" or "--help":
        Console.Error.WriteLine("usage: Drydock.Benchmarks nbd-copy [--size-mib N] [--runs N] [--drydock PATH/TO/drydock] [--write]");
        Console.Error.WriteLine("       Drydock.Benchmarks runtime | repository … (see their sections in docs/BENCHMARKS.md)");
        Console.Error.WriteLine("       Drydock.Benchmarks capture-latency [--runs N] [--write]");
        Console.Error.WriteLine("       Drydock.Benchmarks libvirt-capture-latency [--runs N] [--write]");
        Console.Error.WriteLine("       Drydock.Benchmarks backup-restore [--size-mib N] [--runs N] [--work DIR] [--write]");
        Console.Error.WriteLine("       Drydock.Benchmarks extent-planning [--extents N] [--runs N] [--work DIR] [--write]");
        Console.Error.WriteLine("       Drydock.Benchmarks libvirt-backup [--size-mib N] [--runs N] [--work DIR] [--write]");
        return 2;
}

var scenario = args[0];
var sizeMiB = Option("--size-mib", 2048);
var runs = Option("--runs", 3);
var write = args.Contains("--write");
var repository = FindRepository();
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};

// Only nbd-copy runs the drydock executable.
var drydock = scenario == "nbd-copy" ? OptionText("--drydock") ?? await PublishDrydockAsync(repository, cancel.Token) : string.Empty;

string section;
switch (scenario)
{
    case "nbd-copy":
        section = await new NbdCopyBenchmark(sizeMiB * 1024L * 1024, runs, drydock, Console.Error).RunAsync(cancel.Token);
        break;
    case "capture-latency":
        section = await new CaptureLatencyBenchmark(Option("--runs", 20), Console.Error).RunAsync(cancel.Token);
        break;
    case "libvirt-capture-latency":
        section = await new LibvirtCaptureLatencyBenchmark(Option("--runs", 10), Console.Error).RunAsync(cancel.Token);
        break;
    case "backup-restore":
        section = await new Drydock.Benchmarks.Transfer.BackupRestoreBenchmark(sizeMiB * 1024L * 1024, runs, OptionText("--work") ?? "/var/tmp/drydock-bench-transfer", Console.Error).RunAsync(cancel.Token);
        break;
    case "extent-planning":
        section = await new Drydock.Benchmarks.Transfer.ExtentPlanningBenchmark(Option("--extents", 100_000), Option("--runs", 5), OptionText("--work") ?? "/var/tmp/drydock-bench-extents", Console.Error).RunAsync(cancel.Token);
        break;
    case "libvirt-backup":
        section = await new Drydock.Benchmarks.Transfer.LibvirtBackupBenchmark(sizeMiB * 1024L * 1024, runs, OptionText("--work") ?? "/var/tmp/drydock-bench-transfer", Console.Error).RunAsync(cancel.Token);
        break;
    default:
        Console.Error.WriteLine($"unknown scenario {scenario}");
        return 2;
}

Console.Out.Write(section);
if (write)
{
    BenchmarkReport.Replace(Path.Combine(repository, "docs", "BENCHMARKS.md"), scenario, section);
    Console.Error.WriteLine("docs/BENCHMARKS.md updated");
}

return 0;

int Option(string name, int fallback)
{
    var text = OptionText(name);
    return text is null ? fallback : int.Parse(text, CultureInfo.InvariantCulture);
}

string? OptionText(string name)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? args[index + 1] : null;
}

static async Task<string> PublishDrydockAsync(string repository, CancellationToken cancellationToken)
{
    // The release build (deploy/publish): self-contained, composite ReadyToRun with the framework.
    var output = Path.Combine(repository, "artifacts", "bench", "drydock");
    Console.Error.WriteLine($"publishing drydock with deploy/publish to {output}");
    await Drydock.TestKit.ProcessRunner.RunAsync(
        Path.Combine(repository, "deploy", "publish"),
        [output, "linux-x64"],
        new Drydock.TestKit.ProcessRunOptions { Timeout = TimeSpan.FromMinutes(15) },
        cancellationToken);
    return Path.Combine(output, "drydock");
}

static string FindRepository()
{
    for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
    {
        if (File.Exists(Path.Combine(directory.FullName, "cluster.sln")))
        {
            return directory.FullName;
        }
    }

    return Directory.GetCurrentDirectory();
}
