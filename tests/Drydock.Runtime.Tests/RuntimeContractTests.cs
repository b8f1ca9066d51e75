using System.Diagnostics.Metrics;
using System.Text.Json;
using Drydock.Runtime.Client;
using Drydock.Runtime.Diagnostics;
using Drydock.Runtime.Hosting;
using Drydock.Runtime.Storage;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Drydock.Runtime.Tests;

/// <summary>
/// The behaviour every store must have. Runs once per provider (SQLite file, private PostgreSQL server); each test
/// gets a fresh, migrated database.
/// </summary>
public abstract class RuntimeContractTests : IAsyncLifetime
{
    private readonly List<GrainSilo> _silos = [];

    protected IRuntimeStore Store { get; private set; } = null!;

    protected MessageTypeRegistry Messages { get; } = TestGrainHandler.Messages();

    protected GrainClient Client { get; private set; } = null!;

    protected abstract Task<IRuntimeStore> CreateStoreAsync();

    protected abstract Task ExecuteSqlAsync(string sql);

    protected abstract int LatestSchemaVersion { get; }

    public async ValueTask InitializeAsync()
    {
        Store = await CreateStoreAsync();
        await Store.MigrateAsync(TestContext.Current.CancellationToken);
        Client = new GrainClient(Store, Messages, TimeProvider.System, new GrainClientOptions { ReplyPollInterval = TimeSpan.FromMilliseconds(100) });
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var silo in _silos)
        {
            await silo.DisposeAsync();
        }

        await Store.DisposeAsync();
        await CleanupAsync();
        GC.SuppressFinalize(this);
    }

    // xunit v3 calls DisposeAsync only (not Dispose) on a class that has both: provider cleanup goes here.
    protected virtual ValueTask CleanupAsync() => ValueTask.CompletedTask;

    protected static GrainRuntimeOptions FastOptions(string host = "h1") => new()
    {
        HypervisorHost = host,
        LeaseDuration = TimeSpan.FromSeconds(5),
        HeartbeatInterval = TimeSpan.FromMilliseconds(200),
        SiloDeathTimeout = TimeSpan.FromSeconds(2),
        PollInterval = TimeSpan.FromMilliseconds(100),
        EffectLeaseDuration = TimeSpan.FromSeconds(3),
        EffectRetryBackoff = TimeSpan.FromMilliseconds(50),
        StoreRetryDelay = TimeSpan.FromMilliseconds(100),
        ShutdownGracePeriod = TimeSpan.FromSeconds(2),
        MaintenanceInterval = TimeSpan.FromSeconds(1),
    };

    protected async Task<GrainSilo> StartSiloAsync(GrainRuntimeOptions? options = null, IGrainHandler? handler = null, IEffectExecutor? executor = null)
    {
        var silo = new GrainSilo(
            Store,
            [handler ?? new TestGrainHandler()],
            executor is null ? [] : [executor],
            Messages,
            options ?? FastOptions(),
            TimeProvider.System,
            NullLogger<GrainSilo>.Instance);
        _silos.Add(silo);
        await silo.StartAsync(TestContext.Current.CancellationToken);
        return silo;
    }

    protected Task<TestState?> StateAsync(string key) => Client.GetStateAsync(Grain(key), TestJsonContext.Default.TestState, TestContext.Current.CancellationToken);

    protected static GrainId Grain(string key) => new(TestGrainHandler.DefaultKind, key);

    protected Task<TestState?> WaitForStateAsync(string key, Func<TestState, bool> done, string what)
        => Wait.UntilAsync(() => StateAsync(key), s => s is not null && done(s), what);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Migrate_IsIdempotent_AndReportsTheLatestVersion()
    {
        Assert.Equal(LatestSchemaVersion, await Store.MigrateAsync(Ct));
        Assert.Equal(LatestSchemaVersion, await Store.MigrateAsync(Ct));
    }

    [Fact]
    public async Task Migrate_RefusesADatabaseMigratedByANewerBinary()
    {
        await ExecuteSqlAsync("INSERT INTO runtime_schema (version, description, applied_at) VALUES (99, 'from the future', " + NowSql + ")");
        var ex = await Assert.ThrowsAsync<RuntimeSchemaTooNewException>(() => Store.MigrateAsync(Ct));
        Assert.Equal(99, ex.DatabaseVersion);
    }

    protected abstract string NowSql { get; }

    [Fact]
    public async Task Send_RunsTheHandler_AndCommitsStateWithAVersionPerTurn()
    {
        await StartSiloAsync();
        await Client.SendAsync(Grain("a"), new Add(1), cancellationToken: Ct);
        await Client.SendAsync(Grain("a"), new Add(2), cancellationToken: Ct);
        var state = await WaitForStateAsync("a", s => s.Count == 2, "two turns");
        Assert.Equal([1L, 2L], state!.Seqs);
        var snapshot = await Client.GetAsync(Grain("a"), Ct);
        Assert.Equal(2, snapshot!.Version);
        Assert.Equal(TestState.TypeName, snapshot.StateType);
        Assert.Equal(TestState.SchemaVersion, snapshot.SchemaVersion);
    }

    [Fact]
    public async Task NewMessage_WakesAnIdleSilo_WithoutWaitingForThePoll()
    {
        var options = FastOptions();
        // Far beyond the wait's deadline: only a wake-up (NOTIFY on PostgreSQL, in-process on SQLite) can deliver.
        options.PollInterval = TimeSpan.FromMinutes(10);
        await StartSiloAsync(options);
        await Task.Delay(300, Ct);
        await Client.SendAsync(Grain("wake"), new Add(1), cancellationToken: Ct);
        await WaitForStateAsync("wake", s => s.Count == 1, "the woken turn");
    }

    [Fact]
    public async Task Messages_AreHandledInFifoOrder_PerGrain()
    {
        // Enqueued before any silo runs, in separate transactions, so the silo sees a backlog it must drain in order.
        for (var i = 1; i <= 60; i++)
        {
            await Client.SendAsync(Grain("fifo"), new Add(i), cancellationToken: Ct);
        }

        await StartSiloAsync();
        var state = await WaitForStateAsync("fifo", s => s.Count == 60, "sixty turns");
        Assert.Equal(Enumerable.Range(1, 60).Select(i => (long)i), state!.Seqs);
        Assert.Equal(0, state.Violations);
    }

    [Fact]
    public async Task IdempotencyKey_DuplicateBeforeAndAfterProcessing_IsProcessedOnce()
    {
        Assert.Equal(EnqueueOutcome.Accepted, await Client.SendAsync(Grain("idem"), new Add(1), idempotencyKey: "req-1", cancellationToken: Ct));
        Assert.Equal(EnqueueOutcome.Duplicate, await Client.SendAsync(Grain("idem"), new Add(1), idempotencyKey: "req-1", cancellationToken: Ct));
        await StartSiloAsync();
        await WaitForStateAsync("idem", s => s.Count == 1, "the first delivery");
        // After the message was consumed the key is still remembered.
        Assert.Equal(EnqueueOutcome.Duplicate, await Client.SendAsync(Grain("idem"), new Add(1), idempotencyKey: "req-1", cancellationToken: Ct));
        Assert.Equal(EnqueueOutcome.Accepted, await Client.SendAsync(Grain("idem"), new Add(2), idempotencyKey: "req-2", cancellationToken: Ct));
        var state = await WaitForStateAsync("idem", s => s.Count == 2, "the second key");
        Assert.Equal([1L, 2L], state!.Seqs);
    }

    [Fact]
    public async Task IdempotencyKey_IsScopedToTheTargetGrain()
    {
        Assert.Equal(EnqueueOutcome.Accepted, await Client.SendAsync(Grain("x1"), new Add(1), idempotencyKey: "same", cancellationToken: Ct));
        Assert.Equal(EnqueueOutcome.Accepted, await Client.SendAsync(Grain("x2"), new Add(1), idempotencyKey: "same", cancellationToken: Ct));
    }

    [Fact]
    public async Task DelayedMessage_IsNotDeliveredBeforeItIsDue()
    {
        await StartSiloAsync();
        var started = TimeProvider.System.GetTimestamp();
        await Client.SendAsync(Grain("later"), new Add(1), delay: TimeSpan.FromMilliseconds(1500), cancellationToken: Ct);
        await Client.SendAsync(Grain("now"), new Add(1), cancellationToken: Ct);
        await WaitForStateAsync("now", s => s.Count == 1, "the immediate message");
        await WaitForStateAsync("later", s => s.Count == 1, "the delayed message");
        // Lower bound only: it may come late, never early (the store clock and ours are the same machine's).
        Assert.True(TimeProvider.System.GetElapsedTime(started) >= TimeSpan.FromMilliseconds(1400));
    }

    [Fact]
    public async Task HandlerTimer_SelfMessageWithADelay_Fires()
    {
        await StartSiloAsync();
        await Client.SendAsync(Grain("timer"), new SetTimer(300), cancellationToken: Ct);
        var state = await WaitForStateAsync("timer", s => s.Ticks == 1, "the tick");
        Assert.Equal(1, state!.Ticks);
    }

    [Fact]
    public async Task OutgoingMessage_ToAnotherGrain_IsDeliveredInTheSameOrder()
    {
        await StartSiloAsync();
        for (var i = 1; i <= 10; i++)
        {
            await Client.SendAsync(Grain("relay"), new Relay("sink", i), cancellationToken: Ct);
        }

        var state = await WaitForStateAsync("sink", s => s.Count == 10, "ten relayed adds");
        Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), state!.Seqs);
    }

    [Fact]
    public async Task ManyGrains_TwoSilos_NoLostOrDoubledTurn()
    {
        const int Grains = 100;
        const int PerGrain = 10;
        var batch = new List<OutgoingMessage>();
        for (var seq = 1; seq <= PerGrain; seq++)
        {
            for (var g = 0; g < Grains; g++)
            {
                batch.Add(new OutgoingMessage(Grain($"g{g}"), new Add(seq)));
            }
        }

        await Client.SendManyAsync(batch, Ct);
        var one = await StartSiloAsync();
        var two = await StartSiloAsync();
        await Wait.UntilAsync(() => Store.GetQueueDepthAsync(Ct), d => d.Inbox == 0, "the inboxes to drain");
        for (var g = 0; g < Grains; g++)
        {
            var state = await StateAsync($"g{g}");
            Assert.Equal(PerGrain, state!.Count);
            Assert.Equal(0, state.Violations);
            Assert.Equal(PerGrain, (await Client.GetAsync(Grain($"g{g}"), Ct))!.Version);
        }

        Assert.NotEqual(one.SiloId, two.SiloId);
    }

    [Fact]
    public async Task Call_ReturnsTheHandlersReply()
    {
        await StartSiloAsync();
        await Client.SendAsync(Grain("call"), new Add(1), cancellationToken: Ct);
        var reply = await Client.CallAsync<CountReply>(Grain("call"), new GetCount(), TimeSpan.FromSeconds(30), Ct);
        // FIFO: the add was enqueued first, so the reply already counts it.
        Assert.Equal(new CountReply(1, 1), reply);
    }

    [Fact]
    public async Task Call_WithNoSiloRunning_TimesOut()
    {
        var ex = await Assert.ThrowsAsync<GrainCallTimeoutException>(() => Client.CallAsync<CountReply>(Grain("nobody"), new GetCount(), TimeSpan.FromMilliseconds(300), Ct));
        Assert.Equal(Grain("nobody"), ex.Target);
    }

    [Fact]
    public async Task HandlerThatThrows_IsRetriedThenDeadLettered_AndLaterMessagesStillRun()
    {
        var options = FastOptions();
        options.MaxMessageAttempts = 3;
        await StartSiloAsync(options);
        var call = Client.CallAsync<CountReply>(Grain("poison"), new Boom(), TimeSpan.FromSeconds(30), Ct);
        await Client.SendAsync(Grain("poison"), new Add(1), cancellationToken: Ct);
        var ex = await Assert.ThrowsAsync<GrainCallFailedException>(() => call);
        Assert.Contains("boom", ex.Error, StringComparison.Ordinal);
        await WaitForStateAsync("poison", s => s.Count == 1, "the message after the poison one");
        var dead = await Store.ListDeadLettersAsync(Grain("poison"), Ct);
        var letter = Assert.Single(dead);
        Assert.Equal(Boom.TypeName, letter.TypeName);
        Assert.Equal(3, letter.Attempts);
    }

    [Fact]
    public async Task UnknownMessageType_IsDeadLetteredAtOnce()
    {
        await Store.EnqueueAsync([new NewMessage(Grain("unknown"), "test.never-registered", 1, "{}")], Ct);
        await Client.SendAsync(Grain("unknown"), new Add(1), cancellationToken: Ct);
        await StartSiloAsync();
        await WaitForStateAsync("unknown", s => s.Count == 1, "the registered message");
        var letter = Assert.Single(await Store.ListDeadLettersAsync(Grain("unknown"), Ct));
        Assert.Equal(1, letter.Attempts);
    }

    [Fact]
    public async Task Effect_RunsOnTheWorkerOfTheNamedHost_AndItsCompletionReachesTheGrain()
    {
        var onH1 = new TestEffectExecutor();
        var onH2 = new TestEffectExecutor();
        await StartSiloAsync(FastOptions("h1"), executor: onH1);
        var h2 = await StartSiloAsync(FastOptions("h2"), executor: onH2);
        await Client.SendAsync(Grain("fx"), new StartEffect("h2", "snap", "ok", null), cancellationToken: Ct);
        var state = await WaitForStateAsync("fx", s => s.Completed.Count == 1, "the completion");
        Assert.Equal(["fx:snap"], state!.Completed);
        Assert.Empty(onH1.Runs);
        Assert.Equal(("fx:snap", "h2", 1), Assert.Single(onH2.Runs));
        var work = Assert.Single(await Store.ListWorkAsync(Grain("fx"), Ct));
        Assert.Equal(WorkStatus.Completed, work.Status);
        Assert.Equal(h2.SiloId, work.Owner);
    }

    [Fact]
    public async Task Effect_RetryableFailure_IsRetriedUpToItsAttempts_ThenEffectFailed()
    {
        var executor = new TestEffectExecutor();
        await StartSiloAsync(executor: executor);
        await Client.SendAsync(Grain("fxr"), new StartEffect("h1", "flaky", "retry", 3), cancellationToken: Ct);
        var state = await WaitForStateAsync("fxr", s => s.Failed.Count == 1, "the failure");
        Assert.Empty(state!.Completed);
        Assert.Equal([1, 2, 3], executor.Runs.Select(r => r.Attempt));
        var work = Assert.Single(await Store.ListWorkAsync(Grain("fxr"), Ct));
        Assert.Equal(WorkStatus.Failed, work.Status);
    }

    [Fact]
    public async Task StaleOwner_TurnCommit_IsFencedByEpoch()
    {
        await Store.RegisterSiloAsync(new SiloRegistration("silo-a", SiloRole.Controller, null, "m", 1), Ct);
        await Store.RegisterSiloAsync(new SiloRegistration("silo-b", SiloRole.Controller, null, "m", 2), Ct);
        await Client.SendAsync(Grain("fence"), new Add(1), cancellationToken: Ct);
        var processor = new TestGrainHandler().CreateProcessor(Messages, 3);
        string[] kinds = [TestGrainHandler.DefaultKind];

        var a = Assert.Single(await Store.ClaimGrainsAsync("silo-a", kinds, 10, TimeSpan.FromMilliseconds(300), Ct));
        Assert.Empty(await Store.ClaimGrainsAsync("silo-b", kinds, 10, TimeSpan.FromSeconds(30), Ct));
        // A's lease runs out while it is "paused"; B claims with the next epoch.
        var b = await Wait.UntilAsync(() => Store.ClaimGrainsAsync("silo-b", kinds, 10, TimeSpan.FromSeconds(30), Ct), l => l.Count == 1, "the lease to expire");
        Assert.Equal(a.Epoch + 1, b[0].Epoch);
        Assert.Equal("silo-a", b[0].PreviousOwner);

        var stale = await Store.RunTurnAsync(a, 16, TimeSpan.FromSeconds(30), 3, processor, Ct);
        Assert.Equal(TurnBatchStatus.Fenced, stale.Status);
        Assert.Equal(0, (await Client.GetAsync(Grain("fence"), Ct))!.Version);

        var current = await Store.RunTurnAsync(b[0], 16, TimeSpan.FromSeconds(30), 3, processor, Ct);
        Assert.Equal(TurnBatchStatus.Committed, current.Status);
        Assert.Equal(1, current.Processed);
        Assert.True(current.Released);
        Assert.False(await Store.ReleaseGrainAsync(a, Ct));
        var state = await StateAsync("fence");
        Assert.Equal([1L], state!.Seqs);
    }

    [Fact]
    public async Task Claim_OneGrainsBacklogAtTheHeadOfTheInbox_DoesNotHideTheGrainsBehindIt()
    {
        await Store.RegisterSiloAsync(new SiloRegistration("silo-a", SiloRole.Controller, null, "m", 1), Ct);
        await Store.RegisterSiloAsync(new SiloRegistration("silo-b", SiloRole.Controller, null, "m", 2), Ct);
        // More messages than the PostgreSQL claim window (1,024), all older than the small grain's one.
        await Client.SendManyAsync([.. Enumerable.Range(1, 1100).Select(i => new OutgoingMessage(Grain("hog"), new Add(i)))], Ct);
        await Client.SendAsync(Grain("small"), new Add(1), cancellationToken: Ct);
        string[] kinds = [TestGrainHandler.DefaultKind];

        var a = Assert.Single(await Store.ClaimGrainsAsync("silo-a", kinds, 1, TimeSpan.FromMinutes(1), Ct));
        Assert.Equal("hog", a.Grain.Key);
        var b = Assert.Single(await Store.ClaimGrainsAsync("silo-b", kinds, 5, TimeSpan.FromMinutes(1), Ct));
        Assert.Equal("small", b.Grain.Key);
    }

    [Fact]
    public async Task StaleWorker_EffectResult_IsFencedByAttempt_AndTheGrainHearsOnce()
    {
        await Store.RegisterSiloAsync(new SiloRegistration("worker-a", SiloRole.Worker, "h1", "m", 1), Ct);
        await Store.RegisterSiloAsync(new SiloRegistration("worker-b", SiloRole.Worker, "h1", "m", 2), Ct);
        await StartSiloAsync(FastOptions("unused-host"));
        await Client.SendAsync(Grain("fxf"), new StartEffect("h1", "long", "ok", null), cancellationToken: Ct);
        await Wait.UntilAsync(() => Store.ListWorkAsync(Grain("fxf"), Ct), w => w.Count == 1, "the effect row");

        var a = Assert.Single(await Store.ClaimWorkAsync("worker-a", "h1", 10, TimeSpan.FromMilliseconds(300), Ct));
        Assert.Equal(1, a.Attempt);
        var b = await Wait.UntilAsync(() => Store.ClaimWorkAsync("worker-b", "h1", 10, TimeSpan.FromSeconds(30), Ct), l => l.Count == 1, "the effect lease to expire");
        Assert.Equal(2, b[0].Attempt);

        Assert.False(await Store.RenewWorkAsync(a, TimeSpan.FromSeconds(30), Ct));
        var outcome = new NewMessage(Grain("fxf"), EffectCompleted.TypeName, EffectCompleted.TypeVersion, JsonSerializer.Serialize(new EffectCompleted(a.EffectId, a.TypeName, 1, null), Serialization.RuntimeJsonContext.Default.EffectCompleted))
        {
            IdempotencyKey = "effect-outcome:" + a.EffectId,
        };
        Assert.False(await Store.FinishWorkAsync(a, WorkStatus.Completed, null, outcome, Ct));
        Assert.True(await Store.FinishWorkAsync(b[0], WorkStatus.Completed, null, outcome, Ct));
        Assert.False(await Store.FinishWorkAsync(b[0], WorkStatus.Completed, null, outcome, Ct));

        var state = await WaitForStateAsync("fxf", s => s.Completed.Count >= 1, "the completion");
        await Task.Delay(300, Ct);
        state = await StateAsync("fxf");
        Assert.Equal([a.EffectId], state!.Completed);
        var work = Assert.Single(await Store.ListWorkAsync(Grain("fxf"), Ct));
        Assert.Equal(("worker-b", 2, WorkStatus.Completed), (work.Owner, work.Attempt, work.Status));
    }

    [Fact]
    public async Task SiloThatStopsHeartbeating_IsDeclaredDead_AndItsGrainsAreTakenOver()
    {
        var takeovers = 0L;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == RuntimeInstruments.MeterName && instrument.Name == "drydock.runtime.takeovers")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "kind" && (string?)tag.Value == "test-takeover")
                {
                    Interlocked.Add(ref takeovers, value);
                }
            }
        });
        listener.Start();

        var grain = new GrainId("test-takeover", "orphan");
        await Store.RegisterSiloAsync(new SiloRegistration("ghost", SiloRole.Controller, null, "m", 1), Ct);
        await Store.EnqueueAsync([new NewMessage(grain, Add.TypeName, Add.TypeVersion, "{\"seq\":1}")], Ct);
        var ghost = Assert.Single(await Store.ClaimGrainsAsync("ghost", ["test-takeover"], 1, TimeSpan.FromMinutes(10), Ct));

        // The ghost holds a 10-minute lease and never heartbeats: only failure detection can free the grain.
        var live = await StartSiloAsync(handler: new TestGrainHandler("test-takeover"));
        var snapshot = await Wait.UntilAsync(() => Client.GetAsync(grain, Ct), s => s!.Version == 1, "the takeover");
        Assert.Equal(ghost.Epoch + 1, snapshot!.Epoch);
        var silos = await Store.ListSilosAsync(Ct);
        Assert.Equal(SiloStatus.Dead, silos.Single(s => s.SiloId == "ghost").Status);
        Assert.Equal(SiloStatus.Active, silos.Single(s => s.SiloId == live.SiloId).Status);
        // A silo declared dead gets nothing new, even if it tries.
        await Store.EnqueueAsync([new NewMessage(grain, Add.TypeName, Add.TypeVersion, "{\"seq\":2}")], Ct);
        Assert.Empty(await Store.ClaimGrainsAsync("ghost", ["test-takeover"], 1, TimeSpan.FromMinutes(10), Ct));
        Assert.False(await Store.HeartbeatAsync("ghost", Ct));
        listener.RecordObservableInstruments();
        Assert.True(Interlocked.Read(ref takeovers) >= 1);
    }

    [Fact]
    public async Task StoppedSilo_LeavesAndReleasesItsGrains()
    {
        var silo = await StartSiloAsync();
        await Client.SendAsync(Grain("leave"), new Add(1), cancellationToken: Ct);
        await WaitForStateAsync("leave", s => s.Count == 1, "the turn");
        await silo.StopAsync(Ct);
        var record = (await Store.ListSilosAsync(Ct)).Single(s => s.SiloId == silo.SiloId);
        Assert.Equal(SiloStatus.Left, record.Status);
        Assert.Null((await Client.GetAsync(Grain("leave"), Ct))!.Owner);
    }

    [Fact]
    public async Task Queries_ListGrainsOfAKind_InKeyOrderWithKeysetPaging()
    {
        for (var i = 0; i < 5; i++)
        {
            await Client.SendAsync(Grain($"k{i}"), new Add(1), cancellationToken: Ct);
        }

        var first = await Client.ListAsync(TestGrainHandler.DefaultKind, null, 3, Ct);
        Assert.Equal(["k0", "k1", "k2"], first.Select(g => g.Id.Key));
        var second = await Client.ListAsync(TestGrainHandler.DefaultKind, first[^1].Id.Key, 3, Ct);
        Assert.Equal(["k3", "k4"], second.Select(g => g.Id.Key));
        Assert.Empty(await Client.ListAsync("other-kind", null, 3, Ct));
    }

    [Fact]
    public async Task StateWrittenAtAnOlderSchema_IsUpgradedByTheNewerHandler()
    {
        var old = await StartSiloAsync(handler: new TestGrainHandlerV1());
        await Client.SendAsync(Grain("upgrade"), new Add(1), cancellationToken: Ct);
        var v1 = await Wait.UntilAsync(() => Client.GetAsync(Grain("upgrade"), Ct), s => s!.Version == 1, "the v1 turn");
        Assert.Equal(1, v1!.SchemaVersion);
        await old.StopAsync(Ct);

        await StartSiloAsync();
        await Client.SendAsync(Grain("upgrade"), new Add(1), cancellationToken: Ct);
        await Wait.UntilAsync(() => Client.GetAsync(Grain("upgrade"), Ct), s => s!.Version == 2, "the upgraded turn");
        var state = await StateAsync("upgrade");
        Assert.Equal(11, state!.Count);
        Assert.Single(state.Seqs);
        Assert.Equal(TestState.SchemaVersion, (await Client.GetAsync(Grain("upgrade"), Ct))!.SchemaVersion);
    }

    [Fact]
    public async Task TurnMetrics_CountEveryCommittedTurn()
    {
        var turns = 0L;
        var durations = 0L;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == RuntimeInstruments.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (instrument.Name == "drydock.runtime.turns" && HasKind(tags, "test-metrics"))
            {
                Interlocked.Add(ref turns, value);
            }
        });
        listener.SetMeasurementEventCallback<double>((instrument, _, tags, _) =>
        {
            if (instrument.Name == "drydock.runtime.turn.duration" && HasKind(tags, "test-metrics"))
            {
                Interlocked.Increment(ref durations);
            }
        });
        listener.Start();
        await StartSiloAsync(handler: new TestGrainHandler("test-metrics"));
        for (var i = 1; i <= 5; i++)
        {
            await Store.EnqueueAsync([new NewMessage(new GrainId("test-metrics", "m"), Add.TypeName, Add.TypeVersion, $"{{\"seq\":{i}}}")], Ct);
        }

        await Wait.UntilAsync(() => Task.FromResult(Interlocked.Read(ref turns)), t => t == 5, "five counted turns");
        Assert.InRange(Interlocked.Read(ref durations), 1, 5);
    }

    private static bool HasKind(ReadOnlySpan<KeyValuePair<string, object?>> tags, string kind)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == "kind" && (string?)tag.Value == kind)
            {
                return true;
            }
        }

        return false;
    }
}
