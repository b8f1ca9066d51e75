using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using Drydock.Runtime.Diagnostics;
using Drydock.Runtime.Serialization;
using Drydock.Runtime.Storage;
using Microsoft.Extensions.Logging;

namespace Drydock.Runtime.Hosting;

/// <summary>
/// One silo: a process's membership in the cluster, its grain dispatcher (controller role) and its effect worker
/// (worker role). It holds no state of its own that matters: everything it knows is in the store, and whatever it
/// does is accepted only if the store still says it owns the grain (epoch) or the effect (attempt).
/// </summary>
public sealed partial class GrainSilo : IAsyncDisposable
{
    private readonly IRuntimeStore _store;
    private readonly MessageTypeRegistry _messages;
    private readonly GrainRuntimeOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly Dictionary<string, ITurnProcessor> _processors;
    private readonly Dictionary<string, IEffectExecutor> _executors;
    private readonly ConcurrentDictionary<Task, byte> _running = new();
    private readonly AsyncSignal _grainSlotFreed = new();
    private readonly AsyncSignal _effectSlotFreed = new();
    private readonly int _claimThreshold;
    private CancellationTokenSource? _stopping;
    private CancellationTokenSource? _hardStop;
    private Task[] _loops = [];
    private IDisposable? _depthRegistration;
    private QueueDepth _lastDepth;
    private int _activeGrains;
    private int _activeEffects;
    private int _state;

    /// <summary>Creates a silo. Nothing runs until <see cref="StartAsync"/>.</summary>
    /// <param name="store">The store (migrated by the host before starting).</param>
    /// <param name="handlers">Grain handlers by kind (controller role).</param>
    /// <param name="executors">Effect executors by payload type (worker role).</param>
    /// <param name="messages">The message and payload types.</param>
    /// <param name="options">Silo options.</param>
    /// <param name="timeProvider">The clock for delays and durations.</param>
    /// <param name="logger">The logger.</param>
    public GrainSilo(
        IRuntimeStore store,
        IEnumerable<IGrainHandler> handlers,
        IEnumerable<IEffectExecutor> executors,
        MessageTypeRegistry messages,
        GrainRuntimeOptions options,
        TimeProvider timeProvider,
        ILogger<GrainSilo> logger)
    {
        ArgumentNullException.ThrowIfNull(handlers);
        ArgumentNullException.ThrowIfNull(executors);
        _store = store ?? throw new ArgumentNullException(nameof(store));
        _messages = messages ?? throw new ArgumentNullException(nameof(messages));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _timeProvider = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        options.Validate();
        _processors = handlers.ToDictionary(h => h.Kind, h => h.CreateProcessor(messages, options.EffectMaxAttempts), StringComparer.Ordinal);
        _executors = executors.ToDictionary(e => e.EffectType, StringComparer.Ordinal);
        _claimThreshold = Math.Max(1, options.MaxConcurrentGrains / 4);
        SiloId = options.SiloId ?? string.Create(
            CultureInfo.InvariantCulture,
            $"{Environment.MachineName.ToLowerInvariant()}-{Environment.ProcessId}-{Convert.ToHexStringLower(Guid.NewGuid().ToByteArray(), 0, 4)}");
    }

    /// <summary>This silo's id in the membership table and in <c>grains.owner</c>.</summary>
    public string SiloId { get; }

    /// <summary>Grains being turned right now.</summary>
    public int ActiveGrains => Volatile.Read(ref _activeGrains);

    /// <summary>Effects being run right now.</summary>
    public int ActiveEffects => Volatile.Read(ref _activeEffects);

    /// <summary>Completes when the silo stopped by itself (declared dead) or was stopped.</summary>
    public Task Stopped => _stoppedSource.Task;

    private readonly TaskCompletionSource _stoppedSource = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Joins the membership table and starts the loops of this silo's roles.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            throw new InvalidOperationException("The silo was started already.");
        }

        await _store.StartAsync(cancellationToken);
        await _store.RegisterSiloAsync(
            new SiloRegistration(SiloId, _options.Role, _options.HypervisorHost, Environment.MachineName, Environment.ProcessId),
            cancellationToken);
        _stopping = new CancellationTokenSource();
        _hardStop = new CancellationTokenSource();
        var loops = new List<Task> { Task.Run(() => MembershipLoopAsync(_stopping.Token), CancellationToken.None) };
        if (_options.Role.HasFlag(SiloRole.Controller) && _processors.Count > 0)
        {
            loops.Add(Task.Run(() => DispatchLoopAsync(_stopping.Token), CancellationToken.None));
        }

        if (_options.Role.HasFlag(SiloRole.Worker))
        {
            loops.Add(Task.Run(() => WorkLoopAsync(_stopping.Token), CancellationToken.None));
        }

        loops.Add(Task.Run(() => MaintenanceLoopAsync(_stopping.Token), CancellationToken.None));
        _loops = [.. loops];
        _depthRegistration = RuntimeInstruments.RegisterDepthSource(() => _lastDepth);
        Log.Started(_logger, SiloId, _options.Role, _options.HypervisorHost, _store.ProviderName);
    }

    /// <summary>
    /// Stops claiming, lets running turns and effects finish (up to the grace period, then cancels them), releases
    /// what this silo still owns, and leaves the membership table.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        switch (Interlocked.CompareExchange(ref _state, 2, 1))
        {
            case 0:
                return;
            case 1:
                await ShutdownAsync(leave: true, cancellationToken);
                return;
            default:
                // Stopping already (asked before, or declared dead): wait for it to finish.
                await _stoppedSource.Task.WaitAsync(cancellationToken);
                return;
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stopping?.Dispose();
        _hardStop?.Dispose();
    }

    private async Task ShutdownAsync(bool leave, CancellationToken cancellationToken)
    {
        await _stopping!.CancelAsync();
        await Task.WhenAll(_loops).WaitAsync(cancellationToken);
        var running = _running.Keys.ToArray();
        var drained = Task.WhenAll(running);
        if (await Task.WhenAny(drained, Task.Delay(_options.ShutdownGracePeriod, _timeProvider, cancellationToken)) != drained)
        {
            await _hardStop!.CancelAsync();
            await drained.WaitAsync(cancellationToken);
        }

        if (leave)
        {
            try
            {
                await _store.LeaveAsync(SiloId, cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.LeaveFailed(_logger, SiloId, ex);
            }
        }

        _depthRegistration?.Dispose();
        Log.Stopped(_logger, SiloId);
        _stoppedSource.TrySetResult();
    }

    private async Task MembershipLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                if (!await _store.HeartbeatAsync(SiloId, cancellationToken))
                {
                    Log.DeclaredDead(_logger, SiloId);
                    if (_options.StopWhenDeclaredDead)
                    {
                        if (Interlocked.CompareExchange(ref _state, 2, 1) == 1)
                        {
                            _ = Task.Run(() => ShutdownAsync(leave: false, CancellationToken.None), CancellationToken.None);
                        }

                        return;
                    }
                }

                foreach (var dead in await _store.DeclareDeadSilosAsync(_options.SiloDeathTimeout, cancellationToken))
                {
                    Log.DetectedDead(_logger, dead, SiloId);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                Log.StoreError(_logger, "heartbeat", ex);
            }

            if (!await DelayAsync(_options.HeartbeatInterval, cancellationToken))
            {
                return;
            }
        }
    }

    private async Task DispatchLoopAsync(CancellationToken cancellationToken)
    {
        string[] kinds = [.. _processors.Keys];
        var failures = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            // Take the pulses before looking, so a notification that lands meanwhile is not lost.
            var inboxPulse = _store.Signals.Inbox.NextPulse;
            var slotPulse = _grainSlotFreed.NextPulse;
            var free = _options.MaxConcurrentGrains - ActiveGrains;
            var wait = _options.PollInterval;
            // A claim is a scan of the inbox head: under load, claim in bunches instead of once per freed slot.
            var claimNow = free >= _claimThreshold || (free > 0 && ActiveGrains == 0);
            if (claimNow)
            {
                IReadOnlyList<GrainLease> leases;
                try
                {
                    leases = await _store.ClaimGrainsAsync(SiloId, kinds, free, _options.LeaseDuration, cancellationToken);
                    failures = 0;
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex)
                {
                    Log.StoreError(_logger, "claim grains", ex);
                    await DelayAsync(Backoff(++failures), cancellationToken);
                    continue;
                }

                foreach (var lease in leases)
                {
                    if (lease.PreviousOwner is not null)
                    {
                        RuntimeInstruments.RecordTakeover(_store.ProviderName, lease.Grain.Kind);
                        Log.TookOver(_logger, lease.Grain.ToString(), lease.PreviousOwner, lease.Epoch);
                    }

                    Interlocked.Increment(ref _activeGrains);
                    Track(RunActivationAsync(lease));
                }

                if (leases.Count == free)
                {
                    // Every slot got a grain: there may be more work; look again as soon as a slot frees up.
                    continue;
                }

                if (leases.Count == 0)
                {
                    try
                    {
                        var next = await _store.GetTimeUntilNextDueAsync(cancellationToken);
                        if (next is { } n && n < wait)
                        {
                            wait = n + TimeSpan.FromMilliseconds(5);
                        }
                    }
                    catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                    {
                        return;
                    }
                    catch (Exception ex)
                    {
                        Log.StoreError(_logger, "next due", ex);
                    }
                }
            }

            try
            {
                // While too few slots are free to claim, only a freed slot matters.
                await (claimNow || free <= 0 ? Task.WhenAny(inboxPulse, slotPulse) : slotPulse).WaitAsync(wait, _timeProvider, cancellationToken);
            }
            catch (TimeoutException)
            {
                // Poll.
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task RunActivationAsync(GrainLease lease)
    {
        await Task.Yield();
        var processor = _processors[lease.Grain.Kind];
        var cancellationToken = _hardStop!.Token;
        var released = false;
        var failures = 0;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                var started = _timeProvider.GetTimestamp();
                TurnBatchResult result;
                try
                {
                    result = await _store.RunTurnAsync(lease, _options.MaxMessagesPerTransaction, _options.LeaseDuration, _options.MaxMessageAttempts, processor, cancellationToken);
                    failures = 0;
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    break;
                }
                catch (Exception ex)
                {
                    // The transaction rolled back: nothing of this attempt is visible. Try again while the lease may
                    // still be ours; if another silo took over meanwhile, the next attempt is fenced.
                    Log.TurnFailed(_logger, lease.Grain.ToString(), ex);
                    if (++failures >= 5)
                    {
                        break;
                    }

                    await DelayAsync(Backoff(failures), cancellationToken);
                    continue;
                }

                if (result.Status == TurnBatchStatus.Fenced)
                {
                    RuntimeInstruments.RecordFenced(_store.ProviderName, "turn");
                    Log.TurnFenced(_logger, lease.Grain.ToString(), lease.Epoch);
                    released = true;
                    break;
                }

                if (result.Processed > 0)
                {
                    RuntimeInstruments.RecordTurns(_store.ProviderName, lease.Grain.Kind, result.Processed - result.DeadLettered, _timeProvider.GetElapsedTime(started));
                }

                if (result.DeadLettered > 0)
                {
                    RuntimeInstruments.RecordDeadLetters(_store.ProviderName, lease.Grain.Kind, result.DeadLettered);
                    Log.DeadLettered(_logger, lease.Grain.ToString(), result.DeadLettered);
                }

                if (result.Released)
                {
                    released = true;
                    break;
                }

                if (_stopping!.IsCancellationRequested)
                {
                    break;
                }
            }
        }
        finally
        {
            if (!released)
            {
                try
                {
                    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5), _timeProvider);
                    await _store.ReleaseGrainAsync(lease, timeout.Token);
                }
                catch (Exception ex)
                {
                    // The lease expires by itself; the next claim raises the epoch.
                    Log.StoreError(_logger, "release grain", ex);
                }
            }

            Interlocked.Decrement(ref _activeGrains);
            _grainSlotFreed.Pulse();
        }
    }

    private async Task WorkLoopAsync(CancellationToken cancellationToken)
    {
        var host = _options.HypervisorHost!;
        var failures = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            var workPulse = _store.Signals.Work.NextPulse;
            var slotPulse = _effectSlotFreed.NextPulse;
            var free = _options.MaxConcurrentEffects - ActiveEffects;
            if (free > 0)
            {
                IReadOnlyList<WorkItem> items;
                try
                {
                    items = await _store.ClaimWorkAsync(SiloId, host, free, _options.EffectLeaseDuration, cancellationToken);
                    failures = 0;
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex)
                {
                    Log.StoreError(_logger, "claim work", ex);
                    await DelayAsync(Backoff(++failures), cancellationToken);
                    continue;
                }

                foreach (var item in items)
                {
                    Interlocked.Increment(ref _activeEffects);
                    Track(RunEffectAsync(item));
                }

                if (items.Count == free)
                {
                    continue;
                }
            }

            try
            {
                await Task.WhenAny(workPulse, slotPulse).WaitAsync(_options.PollInterval, _timeProvider, cancellationToken);
            }
            catch (TimeoutException)
            {
                // Poll.
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task RunEffectAsync(WorkItem item)
    {
        await Task.Yield();
        var cancellationToken = _hardStop!.Token;
        try
        {
            Log.EffectStarted(_logger, item.EffectId, item.TypeName, item.Attempt);
            EffectOutcome outcome;
            if (item.Attempt > item.MaxAttempts)
            {
                outcome = EffectOutcome.Fail($"gave up after {item.MaxAttempts} attempts whose leases expired");
            }
            else if (!_executors.TryGetValue(item.TypeName, out var executor))
            {
                outcome = EffectOutcome.Fail($"no executor for effect type '{item.TypeName}' on this worker");
            }
            else
            {
                outcome = await ExecuteWithLeaseAsync(executor, item, cancellationToken);
            }

            // Recording the result is retried on store errors (a broken pooled connection, a restarting
            // database): the effect already ran, and losing its result would only make it run again.
            var accepted = await WithStoreRetriesAsync(
                "finish effect",
                () => outcome switch
                {
                    EffectOutcome.Completed completed => _store.FinishWorkAsync(item, WorkStatus.Completed, null, Completion(item, completed.Result), cancellationToken),
                    EffectOutcome.Failed { Retryable: true } failed when item.Attempt < item.MaxAttempts
                        => _store.RetryWorkAsync(item, _options.EffectRetryBackoff * item.Attempt, failed.Error, cancellationToken),
                    EffectOutcome.Failed failed => _store.FinishWorkAsync(item, WorkStatus.Failed, failed.Error, Failure(item, failed.Error), cancellationToken),
                    _ => throw new InvalidOperationException("Unknown effect outcome."),
                },
                cancellationToken);
            var name = outcome switch
            {
                EffectOutcome.Completed => "completed",
                EffectOutcome.Failed { Retryable: true } when item.Attempt < item.MaxAttempts => "retry",
                _ => "failed",
            };
            if (accepted)
            {
                RuntimeInstruments.RecordEffect(_store.ProviderName, item.TypeName, name);
                Log.EffectFinished(_logger, item.EffectId, name, item.Attempt);
            }
            else
            {
                // Another attempt owns the effect now: this result is rejected by the store, not by us.
                RuntimeInstruments.RecordFenced(_store.ProviderName, "effect");
                Log.EffectFenced(_logger, item.EffectId, item.Attempt);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping: the lease expires or LeaveAsync returns the effect to the queue.
        }
        catch (Exception ex)
        {
            Log.StoreError(_logger, "finish effect", ex);
        }
        finally
        {
            Interlocked.Decrement(ref _activeEffects);
            _effectSlotFreed.Pulse();
        }
    }

    private async Task<EffectOutcome> ExecuteWithLeaseAsync(IEffectExecutor executor, WorkItem item, CancellationToken cancellationToken)
    {
        object payload;
        try
        {
            payload = _messages.Deserialize(item.TypeName, item.TypeVersion, item.Body);
        }
        catch (Exception ex) when (ex is GrainRuntimeException or JsonException)
        {
            return EffectOutcome.Fail($"payload cannot be read: {ex.Message}");
        }

        using var leaseLost = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var renewalStop = new CancellationTokenSource();
#pragma warning disable CA2025 // The renewal task is awaited in the finally block, before both sources are disposed.
        var renewal = RenewWhileRunningAsync(item, leaseLost, renewalStop.Token);
#pragma warning restore CA2025
        try
        {
            return await executor.ExecuteAsync(new EffectContext(item.EffectId, item.Grain, item.Host, item.Attempt, payload), leaseLost.Token);
        }
        catch (OperationCanceledException) when (leaseLost.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            return EffectOutcome.Retry("cancelled after the lease was lost");
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            return EffectOutcome.Retry($"{ex.GetType().Name}: {ex.Message}");
        }
        finally
        {
            await renewalStop.CancelAsync();
            await renewal;
        }
    }

    private async Task RenewWhileRunningAsync(WorkItem item, CancellationTokenSource leaseLost, CancellationToken stop)
    {
        var period = _options.EffectLeaseDuration / 3;
        while (await DelayAsync(period, stop))
        {
            try
            {
                if (!await _store.RenewWorkAsync(item, _options.EffectLeaseDuration, stop))
                {
                    // Tell the executor to stop; whatever it still returns is judged by the store.
                    Log.EffectLeaseLost(_logger, item.EffectId, item.Attempt);
                    await leaseLost.CancelAsync();
                    return;
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                Log.StoreError(_logger, "renew effect", ex);
            }
        }
    }

    private NewMessage Completion(WorkItem item, object? result)
    {
        JsonElement? element = null;
        if (result is not null)
        {
            using var document = JsonDocument.Parse(_messages.Serialize(result).Json);
            element = document.RootElement.Clone();
        }

        var body = JsonSerializer.Serialize(new EffectCompleted(item.EffectId, item.TypeName, item.Attempt, element), RuntimeJsonContext.Default.EffectCompleted);
        return new NewMessage(item.Grain, EffectCompleted.TypeName, EffectCompleted.TypeVersion, body) { IdempotencyKey = "effect-outcome:" + item.EffectId };
    }

    private static NewMessage Failure(WorkItem item, string error)
    {
        var body = JsonSerializer.Serialize(new EffectFailed(item.EffectId, item.TypeName, item.Attempt, error), RuntimeJsonContext.Default.EffectFailed);
        return new NewMessage(item.Grain, EffectFailed.TypeName, EffectFailed.TypeVersion, body) { IdempotencyKey = "effect-outcome:" + item.EffectId };
    }

    private async Task MaintenanceLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                _lastDepth = await _store.GetQueueDepthAsync(cancellationToken);
                await _store.PruneAsync(_options.IdempotencyRetention, _options.ReplyRetention, cancellationToken);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                Log.StoreError(_logger, "maintenance", ex);
            }

            if (!await DelayAsync(_options.MaintenanceInterval, cancellationToken))
            {
                return;
            }
        }
    }

    private async Task<T> WithStoreRetriesAsync<T>(string operation, Func<Task<T>> action, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await action();
            }
            catch (Exception ex) when (ex is not OperationCanceledException && attempt < StoreAttempts)
            {
                Log.StoreError(_logger, operation, ex);
                await Task.Delay(Backoff(attempt), _timeProvider, cancellationToken);
            }
        }
    }

    private const int StoreAttempts = 8;

    private void Track(Task task)
    {
        _running[task] = 0;
        _ = task.ContinueWith(t => _running.TryRemove(t, out _), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private TimeSpan Backoff(int failures) => _options.StoreRetryDelay * Math.Min(failures, 10);

    private async Task<bool> DelayAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(delay, _timeProvider, cancellationToken);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
