using System.Diagnostics.Metrics;
using System.Globalization;
using System.Runtime.InteropServices;
using Drydock.Runtime.ChaosHost;
using Drydock.Runtime.Diagnostics;
using Drydock.Runtime.Hosting;
using Drydock.Runtime.PostgreSql;
using Drydock.Runtime.Storage;
using Microsoft.Extensions.Logging;

// A silo process for the chaos tests. Prints "ready <silo-id>" once running, "effect-start/effect-end" per effect
// attempt, "fenced <what>" for every commit or result the store rejected, and "takeover <grain>" per takeover.
// Stops cleanly on SIGTERM; the tests also kill -9 and SIGSTOP it.
var settings = new Dictionary<string, string>(StringComparer.Ordinal);
for (var i = 0; i + 1 < args.Length; i += 2)
{
    settings[args[i].TrimStart('-')] = args[i + 1];
}

string Setting(string name, string fallback) => settings.TryGetValue(name, out var value) ? value : fallback;
int Number(string name, int fallback) => int.Parse(Setting(name, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);

var siloId = Setting("silo-id", $"chaos-{Environment.ProcessId}");
using var loggerFactory = LoggerFactory.Create(b => b
    .SetMinimumLevel(Enum.Parse<LogLevel>(Setting("log-level", "Warning")))
    .AddSimpleConsole(o => o.SingleLine = true)
    .AddFilter("Npgsql", LogLevel.Error));
using var fenced = new MeterListener();
fenced.InstrumentPublished = (instrument, listener) =>
{
    if (instrument.Meter.Name == RuntimeInstruments.MeterName && instrument.Name is "drydock.runtime.fenced" or "drydock.runtime.takeovers")
    {
        listener.EnableMeasurementEvents(instrument);
    }
};
fenced.SetMeasurementEventCallback<long>((instrument, _, tags, _) =>
{
    var what = "";
    foreach (var tag in tags)
    {
        if (tag.Key is "what" or "kind")
        {
            what = tag.Value?.ToString() ?? "";
        }
    }

    Output.Line(instrument.Name == "drydock.runtime.fenced" ? $"fenced {what}" : $"takeover {what}");
});
fenced.Start();

var connection = $"{Setting("connection", "")};Application Name={siloId}";
await using var store = new PostgresRuntimeStore(
    new PostgresRuntimeStoreOptions
    {
        ConnectionString = connection,
        IdleInTransactionTimeout = TimeSpan.FromMilliseconds(Number("idle-tx-ms", 1000)),
    },
    TimeProvider.System,
    loggerFactory.CreateLogger<PostgresRuntimeStore>());
var options = new GrainRuntimeOptions
{
    SiloId = siloId,
    Role = SiloRole.Both,
    HypervisorHost = Setting("host", "h1"),
    LeaseDuration = TimeSpan.FromMilliseconds(Number("lease-ms", 2000)),
    EffectLeaseDuration = TimeSpan.FromMilliseconds(Number("effect-lease-ms", 2000)),
    HeartbeatInterval = TimeSpan.FromMilliseconds(Number("heartbeat-ms", 300)),
    SiloDeathTimeout = TimeSpan.FromMilliseconds(Number("death-ms", 3000)),
    PollInterval = TimeSpan.FromMilliseconds(Number("poll-ms", 250)),
    MaxConcurrentGrains = Number("max-grains", 16),
    MaxConcurrentEffects = Number("max-effects", 8),
    StoreRetryDelay = TimeSpan.FromMilliseconds(200),
    EffectRetryBackoff = TimeSpan.FromMilliseconds(100),
    StopWhenDeclaredDead = Setting("zombie", "false") != "true",
    ShutdownGracePeriod = TimeSpan.FromSeconds(5),
    MaintenanceInterval = TimeSpan.FromSeconds(2),
};
await using var silo = new GrainSilo(
    store,
    [new ChaosGrainHandler()],
    [new ChaosWorkExecutor(TimeSpan.FromMilliseconds(Number("effect-ms", 100)))],
    ChaosGrainHandler.Messages(),
    options,
    TimeProvider.System,
    loggerFactory.CreateLogger<GrainSilo>());

using var terminate = new CancellationTokenSource();
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    terminate.Cancel();
});
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, context =>
{
    context.Cancel = true;
    terminate.Cancel();
});

if (Setting("migrate", "true") == "true")
{
    await store.MigrateAsync();
}

await silo.StartAsync();
Output.Line($"ready {siloId}");

try
{
    await silo.Stopped.WaitAsync(terminate.Token);
}
catch (OperationCanceledException)
{
    // SIGTERM.
}

await silo.StopAsync();
Output.Line($"stopped {siloId}");

return 0;
