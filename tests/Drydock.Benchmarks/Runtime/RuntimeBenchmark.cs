using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using Drydock.Runtime.Client;
using Drydock.Runtime.Diagnostics;
using Drydock.Runtime.Hosting;
using Drydock.Runtime.PostgreSql;
using Drydock.Runtime.Sqlite;
using Drydock.Runtime.Storage;
using Drydock.TestKit.Postgres;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Benchmarks.Runtime;

/// <summary>
/// Turns per second and p99 turn-transaction latency of the grain runtime on PostgreSQL (1 and 3 silos) and SQLite,
/// as ratios to the same pure handler run in a single-threaded in-memory loop.
///   dotnet run -c Release --project tests/Drydock.Benchmarks -- runtime [--grains 10000] [--messages 5] [--durable true]
///       [--sqlite true] [--postgres true] [--silos 1,3] [--batches 16,1]
/// </summary>
internal static class RuntimeBenchmark
{
    public static async Task<int> RunAsync(string[] args)
    {
        var grains = Option(args, "--grains", 10_000);
        var messages = Option(args, "--messages", 5);
        var durable = !args.Contains("--durable") || Option(args, "--durable", "true") == "true";
        var total = grains * messages;
        var runSqlite = Option(args, "--sqlite", "true") == "true";
        var siloCounts = Option(args, "--postgres", "true") == "true"
            ? Option(args, "--silos", "1,3").Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).Where(n => n > 0).ToArray()
            : [];
        var batches = Option(args, "--batches", "16,1").Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        Console.WriteLine($"runtime benchmark: {grains:N0} grains x {messages} messages = {total:N0} turns; {Environment.ProcessorCount} cores; PostgreSQL durable={durable}");

        _ = InMemoryLoop(grains, messages); // warm-up: tiered JIT
        var baseline = InMemoryLoop(grains, messages);
        Console.WriteLine($"in-memory loop: {baseline.TurnsPerSecond:N0} turns/s, p99 {baseline.P99Ms:N4} ms");
        var rows = new List<(string Name, Result Result)>();

        var sqliteDir = Directory.CreateTempSubdirectory("drydock-bench-sqlite-").FullName;
        try
        {
            foreach (var batch in runSqlite ? batches : [])
            {
                var path = Path.Combine(sqliteDir, $"b{batch}.db");
                await using var store = new SqliteRuntimeStore(new SqliteRuntimeStoreOptions { DatabasePath = path, Synchronous = durable ? "FULL" : "NORMAL" }, TimeProvider.System);
                var result = await RunRuntimeAsync([store], grains, messages, batch);
                rows.Add(($"SQLite embedded, 1 silo, {batch} msg/tx", result));
                Console.WriteLine($"{rows[^1].Name}: {result}");
            }
        }
        finally
        {
            Directory.Delete(sqliteDir, recursive: true);
        }

        await using var server = siloCounts.Length == 0 ? null : await PostgresServer.StartAsync(new PostgresServerOptions { Durable = durable });
        var database = 0;
        foreach (var silos in siloCounts)
        {
            foreach (var batch in batches)
            {
                var connection = await server!.CreateDatabaseAsync($"bench{++database}");
                var stores = Enumerable.Range(0, silos)
                    .Select(_ => new PostgresRuntimeStore(new PostgresRuntimeStoreOptions { ConnectionString = connection }, TimeProvider.System, NullLogger<PostgresRuntimeStore>.Instance))
                    .ToArray();
                try
                {
                    var result = await RunRuntimeAsync(stores, grains, messages, batch);
                    rows.Add(($"PostgreSQL, {silos} silo{(silos > 1 ? "s" : "")}, {batch} msg/tx", result));
                    Console.WriteLine($"{rows[^1].Name}: {result}");
                }
                finally
                {
                    foreach (var store in stores)
                    {
                        await store.DisposeAsync();
                    }
                }
            }
        }

        Console.WriteLine();
        Console.WriteLine("| setup | turns/s | ratio to in-memory | p50 tx ms | p99 tx ms | msgs per tx |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        Console.WriteLine($"| in-memory loop, 1 thread | {baseline.TurnsPerSecond:N0} | 1 | {baseline.P50Ms:N4} | {baseline.P99Ms:N4} | 1 |");
        foreach (var (name, result) in rows)
        {
            Console.WriteLine($"| {name} | {result.TurnsPerSecond:N0} | {result.TurnsPerSecond / baseline.TurnsPerSecond:0.00000} | {result.P50Ms:N2} | {result.P99Ms:N2} | {result.MessagesPerTransaction:N1} |");
        }

        return 0;
    }

    private static Result InMemoryLoop(int grains, int messages)
    {
        var handler = new BenchGrainHandler();
        var states = new Dictionary<string, BenchState>(grains);
        var keys = Enumerable.Range(0, grains).Select(i => i.ToString("D6", CultureInfo.InvariantCulture)).ToArray();
        var latencies = new double[grains * messages];
        var n = 0;
        var started = Stopwatch.GetTimestamp();
        for (var seq = 1; seq <= messages; seq++)
        {
            foreach (var key in keys)
            {
                var t0 = Stopwatch.GetTimestamp();
                var id = new GrainId(BenchGrainHandler.KindName, key);
                var state = states.TryGetValue(key, out var s) ? s : handler.CreateInitial(id);
                var envelope = new GrainEnvelope(new BenchAdd(seq, seq), n, BenchAdd.TypeName, default, null, false, 1);
                states[key] = handler.Handle(state, envelope, new TurnContext(id, state.Count, default)).State;
                latencies[n++] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }
        }

        var elapsed = Stopwatch.GetElapsedTime(started);
        Array.Sort(latencies);
        return new Result(n / elapsed.TotalSeconds, Percentile(latencies, 0.50), Percentile(latencies, 0.99), 1);
    }

    private static async Task<Result> RunRuntimeAsync(IRuntimeStore[] stores, int grains, int messages, int batch)
    {
        var registry = BenchGrainHandler.Messages();
        await stores[0].MigrateAsync();
        var client = new GrainClient(stores[0], registry, TimeProvider.System);
        var pending = new List<OutgoingMessage>(5000);
        for (var seq = 1; seq <= messages; seq++)
        {
            for (var g = 0; g < grains; g++)
            {
                pending.Add(new OutgoingMessage(new GrainId(BenchGrainHandler.KindName, g.ToString("D6", CultureInfo.InvariantCulture)), new BenchAdd(seq, seq)));
                if (pending.Count == 5000)
                {
                    await client.SendManyAsync(pending);
                    pending.Clear();
                }
            }
        }

        if (pending.Count > 0)
        {
            await client.SendManyAsync(pending);
        }

        var durations = new List<double>(grains * messages);
        long turns = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == RuntimeInstruments.MeterName && instrument.Name is "drydock.runtime.turn.duration" or "drydock.runtime.turns")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((_, value, _, _) =>
        {
            lock (durations)
            {
                durations.Add(value);
            }
        });
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref turns, value));
        listener.Start();

        var silos = stores.Select(store => new GrainSilo(
            store,
            [new BenchGrainHandler()],
            [],
            registry,
            new GrainRuntimeOptions
            {
                Role = SiloRole.Controller,
                MaxMessagesPerTransaction = batch,
                PollInterval = TimeSpan.FromMilliseconds(200),
                MaintenanceInterval = TimeSpan.FromSeconds(5),
            },
            TimeProvider.System,
            NullLogger<GrainSilo>.Instance)).ToArray();
        var started = Stopwatch.GetTimestamp();
        foreach (var silo in silos)
        {
            await silo.StartAsync();
        }

        var total = (long)grains * messages;
        while (Interlocked.Read(ref turns) < total)
        {
            await Task.Delay(20);
        }

        var elapsed = Stopwatch.GetElapsedTime(started);
        foreach (var silo in silos)
        {
            await silo.DisposeAsync();
        }

        var depth = await stores[0].GetQueueDepthAsync();
        if (depth.Inbox != 0 || Interlocked.Read(ref turns) != total)
        {
            throw new InvalidOperationException($"benchmark run is inconsistent: {turns} turns, {depth.Inbox} messages left");
        }

        double[] sorted;
        lock (durations)
        {
            sorted = [.. durations];
        }

        Array.Sort(sorted);
        return new Result(total / elapsed.TotalSeconds, Percentile(sorted, 0.50), Percentile(sorted, 0.99), (double)total / sorted.Length);
    }

    private static double Percentile(double[] sorted, double p) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    private static int Option(string[] args, string name, int fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }

    private static string Option(string[] args, string name, string fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }

    private sealed record Result(double TurnsPerSecond, double P50Ms, double P99Ms, double MessagesPerTransaction)
    {
        public override string ToString() => $"{TurnsPerSecond:N0} turns/s, p50 {P50Ms:N2} ms, p99 {P99Ms:N2} ms per transaction, {MessagesPerTransaction:N1} msgs/tx";
    }
}
