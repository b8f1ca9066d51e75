using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Drydock.Hypervisor.Libvirt.Interop;

namespace Drydock.Hypervisor.Libvirt;

/// <summary>A libvirt job that ended (the JOB_COMPLETED event, or its statistics read afterwards).</summary>
/// <param name="DomainId">The domain's UUID.</param>
/// <param name="Parameters">libvirt's typed parameters (<c>operation</c>, <c>success</c>, <c>errmsg</c>, …).</param>
internal sealed record LibvirtJobCompletion(string DomainId, IReadOnlyDictionary<string, object> Parameters)
{
    /// <summary>Whether libvirt reported success (a completed push backup); false when it says otherwise or nothing.</summary>
    public bool Succeeded => Parameters.TryGetValue("success", out var value) && value is true;

    /// <summary>libvirt's error message, if any.</summary>
    public string? ErrorMessage => Parameters.TryGetValue("errmsg", out var value) ? value as string : null;
}

/// <summary>
/// The domain events of one connection: lifecycle, device added/removed and job completed, registered with
/// <c>virConnectDomainEventRegisterAny</c>. Callbacks are <see cref="UnmanagedCallersOnlyAttribute"/> functions (no delegates
/// to keep alive); they run on the event loop thread and find their source through a registry keyed by the opaque
/// number they carry, so a callback that races with <see cref="Dispose"/> finds nothing and returns. When libvirt closes
/// the connection (the daemon restarted), <see cref="ConnectionClosed"/> fires; the driver opens a new connection and
/// moves the registrations there with <see cref="Reattach"/>, and subscribers keep their subscription.
/// </summary>
internal sealed unsafe class LibvirtEvents : IDisposable
{
    private const int SubscriberCapacity = 1024;

    private static readonly ConcurrentDictionary<nint, LibvirtEvents> Registry = new();
    private static long _nextId;

    private readonly nint _id;
    private readonly string _hostName;
    private readonly TimeProvider _timeProvider;
    private readonly List<int> _callbackIds = [];
    private readonly ConcurrentDictionary<Subscriber, byte> _subscribers = new();
    private readonly ConcurrentDictionary<string, TaskCompletionSource<LibvirtJobCompletion>> _jobWaiters = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<(string DomainId, DomainEventKind Kind), int> _suppressed = new();
    private LibvirtConnection _connection;
    private bool _closeCallbackRegistered;

    private LibvirtEvents(LibvirtConnection connection, string hostName, TimeProvider timeProvider)
    {
        _id = (nint)Interlocked.Increment(ref _nextId);
        _connection = connection;
        _hostName = hostName;
        _timeProvider = timeProvider;
    }

    /// <summary>Registers the callbacks on <paramref name="connection"/> (call on a libvirt worker thread).</summary>
    public static LibvirtEvents Register(LibvirtConnection connection, string hostName, TimeProvider timeProvider)
    {
        var events = new LibvirtEvents(connection, hostName, timeProvider);
        Registry[events._id] = events;
        try
        {
            events.AddAll();
            return events;
        }
        catch
        {
            events.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A new subscription to lifecycle events from this call on (not from the first enumeration); it ends when
    /// <paramref name="cancellationToken"/> fires.
    /// </summary>
    public IAsyncEnumerable<DomainEvent> Subscribe(CancellationToken cancellationToken)
    {
        var subscriber = new Subscriber(Channel.CreateBounded<DomainEvent>(new BoundedChannelOptions(SubscriberCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        }));
        _subscribers[subscriber] = 0;
        subscriber.Registration = cancellationToken.Register(() =>
        {
            _subscribers.TryRemove(subscriber, out _);
            subscriber.Channel.Writer.TryComplete();
        });
        return ReadAsync(subscriber, cancellationToken);
    }

    private async IAsyncEnumerable<DomainEvent> ReadAsync(Subscriber subscriber, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        try
        {
            while (await subscriber.Channel.Reader.WaitToReadAsync(cancellationToken))
            {
                while (subscriber.Channel.Reader.TryRead(out var item))
                {
                    yield return item;
                }
            }
        }
        finally
        {
            _subscribers.TryRemove(subscriber, out _);
            await subscriber.Registration.DisposeAsync();
        }
    }

    /// <summary>
    /// Starts waiting for the next JOB_COMPLETED event of a domain. Call before starting the job; await the task; call
    /// <see cref="StopWaitingForJob"/> when done.
    /// </summary>
    public Task<LibvirtJobCompletion> WaitForJobAsync(string domainId)
    {
        var waiter = new TaskCompletionSource<LibvirtJobCompletion>(TaskCreationOptions.RunContinuationsAsynchronously);
        _jobWaiters[domainId] = waiter;
        return waiter.Task;
    }

    /// <summary>Stops waiting for a domain's job.</summary>
    public void StopWaitingForJob(string domainId) => _jobWaiters.TryRemove(domainId, out _);

    /// <summary>
    /// Drops the next <paramref name="kind"/> event of a domain: the driver stops and starts a paused domain around a
    /// restore export, and those internal transitions are not the domain's lifecycle.
    /// </summary>
    public void Suppress(string domainId, DomainEventKind kind) =>
        _suppressed.AddOrUpdate((domainId, kind), 1, (_, count) => count + 1);

    /// <summary>Publishes an event the driver itself observed (e.g. a capture that broke).</summary>
    public void Publish(DomainEvent domainEvent)
    {
        foreach (var subscriber in _subscribers.Keys)
        {
            subscriber.Post(domainEvent, _timeProvider);
        }
    }

    /// <summary>
    /// Called (on the event loop thread: hand work off, never block) when libvirt closed the connection for a reason
    /// other than the driver closing it; the argument is libvirt's reason (0 error, 1 end of file, 2 keep-alive).
    /// </summary>
    public Action<int>? ConnectionClosed { get; set; }

    /// <summary>
    /// Moves every registration from the closed connection to <paramref name="connection"/> (call on a libvirt worker
    /// thread) and tells each subscriber with <see cref="DomainEventKind.EventsLost"/>: what happened while the daemon was
    /// away was not seen.
    /// </summary>
    public void Reattach(LibvirtConnection connection)
    {
        RemoveAll();
        _connection = connection;
        AddAll();
        Publish(new DomainEvent(string.Empty, DomainEventKind.EventsLost, _timeProvider.GetUtcNow())
        {
            HostName = _hostName,
            Detail = "the connection to libvirtd was lost and re-established: events in between were not seen",
        });

        // A push backup's completion may have been one of them: its waiter polls the job's statistics as well.
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Registry.TryRemove(_id, out _);
        RemoveAll();
        foreach (var subscriber in _subscribers.Keys)
        {
            subscriber.Channel.Writer.TryComplete();
        }

        foreach (var waiter in _jobWaiters.Values)
        {
            waiter.TrySetCanceled();
        }
    }

    /// <summary>Maps a libvirt lifecycle event (<c>virDomainEventType</c>, detail) to the model; null to drop it.</summary>
    internal static DomainEventKind? MapLifecycle(int eventType, int detail) => eventType switch
    {
        0 => DomainEventKind.Defined,
        1 => DomainEventKind.Undefined,
        2 => detail switch
        {
            1 => DomainEventKind.Migrated,
            3 => DomainEventKind.Reverted,
            _ => DomainEventKind.Started,
        },
        3 => DomainEventKind.Paused,
        4 => DomainEventKind.Resumed,
        5 => detail switch
        {
            2 or 5 => DomainEventKind.Crashed,
            3 => DomainEventKind.Migrated,
            6 => DomainEventKind.Reverted,
            _ => DomainEventKind.Stopped,
        },
        7 => DomainEventKind.Paused,
        8 => DomainEventKind.Crashed,
        _ => null,
    };

    private void AddAll()
    {
        Add(NativeMethods.EventIdLifecycle, (nint)(delegate* unmanaged[Cdecl]<nint, nint, int, int, nint, int>)&OnLifecycle);
        Add(NativeMethods.EventIdDeviceAdded, (nint)(delegate* unmanaged[Cdecl]<nint, nint, byte*, nint, void>)&OnDeviceAdded);
        Add(NativeMethods.EventIdDeviceRemoved, (nint)(delegate* unmanaged[Cdecl]<nint, nint, byte*, nint, void>)&OnDeviceRemoved);
        Add(NativeMethods.EventIdJobCompleted, (nint)(delegate* unmanaged[Cdecl]<nint, nint, NativeMethods.TypedParameter*, int, nint, void>)&OnJobCompleted);
        if (NativeMethods.virConnectRegisterCloseCallback(_connection.Handle.DangerousGetHandle(), CloseCallback, _id, 0) < 0)
        {
            throw new LibvirtNativeException(nameof(NativeMethods.virConnectRegisterCloseCallback), LibvirtErrorInfo.TakeLast(nameof(NativeMethods.virConnectRegisterCloseCallback)));
        }

        _closeCallbackRegistered = true;
    }

    /// <summary>Removes the registrations from the current connection; on a closed connection the calls fail, harmlessly.</summary>
    private void RemoveAll()
    {
        if (!_connection.Handle.IsClosed)
        {
            var handle = _connection.Handle.DangerousGetHandle();
            foreach (var callbackId in _callbackIds)
            {
                if (NativeMethods.virConnectDomainEventDeregisterAny(handle, callbackId) < 0)
                {
                    NativeMethods.virResetLastError();
                }
            }

            if (_closeCallbackRegistered && NativeMethods.virConnectUnregisterCloseCallback(handle, CloseCallback) < 0)
            {
                NativeMethods.virResetLastError();
            }
        }

        _callbackIds.Clear();
        _closeCallbackRegistered = false;
    }

    private static nint CloseCallback => (nint)(delegate* unmanaged[Cdecl]<nint, int, nint, void>)&OnClosed;

    private void Add(int eventId, nint callback)
    {
        var callbackId = NativeMethods.virConnectDomainEventRegisterAny(_connection.Handle.DangerousGetHandle(), 0, eventId, callback, _id, 0);
        if (callbackId < 0)
        {
            throw new LibvirtNativeException(nameof(NativeMethods.virConnectDomainEventRegisterAny), LibvirtErrorInfo.TakeLast(nameof(NativeMethods.virConnectDomainEventRegisterAny)));
        }

        _callbackIds.Add(callbackId);
    }

    private void Emit(string domainId, DomainEventKind kind, string? detail = null)
    {
        while (_suppressed.TryGetValue((domainId, kind), out var count))
        {
            if (count <= 1 ? _suppressed.TryRemove(new KeyValuePair<(string, DomainEventKind), int>((domainId, kind), count)) : _suppressed.TryUpdate((domainId, kind), count - 1, count))
            {
                return;
            }
        }

        Publish(new DomainEvent(domainId, kind, _timeProvider.GetUtcNow()) { HostName = _hostName, Detail = detail });
    }

    /// <summary>
    /// Called (on the event loop thread: hand work off, never block) when a domain pauses on an I/O error
    /// (SUSPENDED/IOERROR): the driver checks whether a capture's scratch space ran out (F17).
    /// </summary>
    public Action<string>? PausedOnIoError { get; set; }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnLifecycle(nint connection, nint domain, int eventType, int detail, nint opaque)
    {
        if (Registry.TryGetValue(opaque, out var events) && MapLifecycle(eventType, detail) is { } kind && LibvirtConnection.GetUuid(domain) is { } id)
        {
            events.Emit(id, kind, string.Create(System.Globalization.CultureInfo.InvariantCulture, $"libvirt event {eventType} detail {detail}"));
            if (eventType == 3 && detail == 2)
            {
                events.PausedOnIoError?.Invoke(id);
            }
        }

        return 0;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void OnClosed(nint connection, int reason, nint opaque)
    {
        // Reason 3 is the client closing it: the driver itself, on dispose.
        if (reason != 3 && Registry.TryGetValue(opaque, out var events))
        {
            events.ConnectionClosed?.Invoke(reason);
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void OnDeviceAdded(nint connection, nint domain, byte* alias, nint opaque) => OnDevice(domain, alias, opaque, "added");

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void OnDeviceRemoved(nint connection, nint domain, byte* alias, nint opaque) => OnDevice(domain, alias, opaque, "removed");

    private static void OnDevice(nint domain, byte* alias, nint opaque, string what)
    {
        if (Registry.TryGetValue(opaque, out var events) && LibvirtConnection.GetUuid(domain) is { } id)
        {
            events.Emit(id, DomainEventKind.DiskChanged, $"device '{NativeStrings.Borrowed(alias)}' {what}");
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void OnJobCompleted(nint connection, nint domain, NativeMethods.TypedParameter* parameters, int count, nint opaque)
    {
        if (Registry.TryGetValue(opaque, out var events) && LibvirtConnection.GetUuid(domain) is { } id
            && events._jobWaiters.TryRemove(id, out var waiter))
        {
            waiter.TrySetResult(new LibvirtJobCompletion(id, LibvirtConnection.ReadTypedParameters(parameters, count)));
        }
    }

    private sealed class Subscriber(Channel<DomainEvent> channel)
    {
        private int _lost;

        public CancellationTokenRegistration Registration { get; set; }

        public Channel<DomainEvent> Channel { get; } = channel;

        public void Post(DomainEvent domainEvent, TimeProvider timeProvider)
        {
            if (Volatile.Read(ref _lost) == 1)
            {
                if (!Channel.Writer.TryWrite(new DomainEvent(string.Empty, DomainEventKind.EventsLost, timeProvider.GetUtcNow()) { HostName = domainEvent.HostName }))
                {
                    return;
                }

                Volatile.Write(ref _lost, 0);
            }

            if (!Channel.Writer.TryWrite(domainEvent))
            {
                Volatile.Write(ref _lost, 1);
            }
        }
    }
}
