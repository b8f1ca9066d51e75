using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace Drydock.Hypervisor;

/// <summary>
/// Fans domain events out to independent subscribers, for drivers implementing
/// <see cref="IHypervisorDriver.WatchEventsAsync"/>. A subscription starts when <see cref="Subscribe"/> is called
/// (not when enumeration starts), so events right after the call are not missed. A subscriber that falls more than
/// its capacity behind loses events and then receives one <see cref="DomainEventKind.EventsLost"/>.
/// </summary>
public sealed class DomainEventBroadcaster
{
    private readonly Lock _lock = new();
    private readonly List<Subscriber> _subscribers = [];
    private readonly int _capacity;
    private readonly TimeProvider _timeProvider;
    private readonly string? _hostName;

    /// <summary>Creates a broadcaster.</summary>
    /// <param name="timeProvider">Clock for <see cref="DomainEventKind.EventsLost"/> events.</param>
    /// <param name="hostName">The host named in those events.</param>
    /// <param name="capacity">Events buffered per subscriber. Default 1024.</param>
    public DomainEventBroadcaster(TimeProvider timeProvider, string? hostName = null, int capacity = 1024)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _timeProvider = timeProvider;
        _hostName = hostName;
        _capacity = capacity;
    }

    /// <summary>Sends an event to every subscriber. Never blocks.</summary>
    /// <param name="domainEvent">The event.</param>
    public void Publish(DomainEvent domainEvent)
    {
        lock (_lock)
        {
            foreach (var subscriber in _subscribers)
            {
                if (subscriber.Lost && subscriber.Channel.Writer.TryWrite(new DomainEvent(string.Empty, DomainEventKind.EventsLost, _timeProvider.GetUtcNow()) { HostName = _hostName }))
                {
                    subscriber.Lost = false;
                }

                if (subscriber.Lost || !subscriber.Channel.Writer.TryWrite(domainEvent))
                {
                    subscriber.Lost = true;
                }
            }
        }
    }

    /// <summary>Subscribes now; the returned sequence yields every event published from this call on.</summary>
    /// <param name="cancellationToken">Ends the subscription.</param>
    /// <returns>The events.</returns>
    public IAsyncEnumerable<DomainEvent> Subscribe(CancellationToken cancellationToken = default)
    {
        var subscriber = new Subscriber(Channel.CreateBounded<DomainEvent>(new BoundedChannelOptions(_capacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        }));
        lock (_lock)
        {
            _subscribers.Add(subscriber);
        }

        subscriber.Registration = cancellationToken.Register(() => Remove(subscriber));
        return ReadAsync(subscriber, cancellationToken);
    }

    /// <summary>Ends every subscription (their sequences complete).</summary>
    public void Complete()
    {
        lock (_lock)
        {
            foreach (var subscriber in _subscribers)
            {
                subscriber.Channel.Writer.TryComplete();
            }

            _subscribers.Clear();
        }
    }

    private async IAsyncEnumerable<DomainEvent> ReadAsync(Subscriber subscriber, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        try
        {
            while (await subscriber.Channel.Reader.WaitToReadAsync(cancellationToken))
            {
                while (subscriber.Channel.Reader.TryRead(out var domainEvent))
                {
                    yield return domainEvent;
                }
            }
        }
        finally
        {
            Remove(subscriber);
        }
    }

    private void Remove(Subscriber subscriber)
    {
        lock (_lock)
        {
            _subscribers.Remove(subscriber);
        }

        subscriber.Channel.Writer.TryComplete();
        subscriber.Registration.Dispose();
    }

    private sealed class Subscriber(Channel<DomainEvent> channel)
    {
        public Channel<DomainEvent> Channel { get; } = channel;

        public bool Lost { get; set; }

        public CancellationTokenRegistration Registration { get; set; }
    }
}
