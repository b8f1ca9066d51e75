using System.Globalization;
using Drydock.Benchmarks;

// Whole-process benchmarks against peer tools. Results go to standard output as a Markdown section and,
// with --write, into docs/BENCHMARKS.md between the scenario's markers.
//
//   dotnet run -c Release --project tests/Drydock.Benchmarks -- nbd-copy [--size-mib 2048] [--runs 3] [--write]
//   dotnet run -c Release --project tests/Drydock.Benchmarks -- capture-latency [--runs 20] [--write]
//   dotnet run -c Release --project tests/Drydock.Benchmarks -- libvirt-capture-latency [--runs 10] [--write]   (root: starts libvirtd)
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.Error.WriteLine("usage: Drydock.Benchmarks nbd-copy [--size-mib N] [--runs N] [--drydock PATH/drydock.dll] [--write]");
    Console.Error.WriteLine("       Drydock.Benchmarks capture-latency [--runs N] [--write]");
    Console.Error.WriteLine("       Drydock.Benchmarks libvirt-capture-latency [--runs N] [--write]");
    return 2;
}

var scenario = args[0];
var sizeMiB = Option("--size-mib", 2048);
var runs = Option("--runs", 3);
var write = args.Contains("--write");
var repository = FindRepository();
var drydock = OptionText("--drydock") ?? Path.Combine(repository, "silo-host", "Drydock.SiloHost", "bin", "Release", "net10.0", "drydock.dll");
if (scenario == "nbd-copy" && !File.Exists(drydock))
{
    Console.Error.WriteLine($"drydock not built at {drydock}: run `dotnet build -c Release silo-host/Drydock.SiloHost` first, or pass --drydock");
    return 1;
}

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};

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
