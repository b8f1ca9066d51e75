using Xunit;

namespace Drydock.Hypervisor.Tests.Model;

public sealed class DomainEventBroadcasterTests
{
    private static DomainEvent Event(int i) => new($"d{i}", DomainEventKind.Started, DateTimeOffset.UnixEpoch);

    [Fact]
    public async Task A_subscription_starts_when_subscribing_not_when_enumerating()
    {
        var broadcaster = new DomainEventBroadcaster(TimeProvider.System);
        broadcaster.Publish(Event(0));
        var events = broadcaster.Subscribe(TestContext.Current.CancellationToken);
        broadcaster.Publish(Event(1));
        broadcaster.Publish(Event(2));
        broadcaster.Complete();

        var seen = new List<string>();
        await foreach (var e in events)
        {
            seen.Add(e.DomainId);
        }

        Assert.Equal(["d1", "d2"], seen);
    }

    [Fact]
    public async Task A_subscriber_that_falls_behind_is_told_that_events_were_lost()
    {
        var broadcaster = new DomainEventBroadcaster(TimeProvider.System, "h", capacity: 2);
        var events = broadcaster.Subscribe(TestContext.Current.CancellationToken).GetAsyncEnumerator(TestContext.Current.CancellationToken);
        for (var i = 0; i < 5; i++)
        {
            broadcaster.Publish(Event(i));
        }

        var seen = new List<DomainEventKind>();
        for (var i = 0; i < 2; i++)
        {
            Assert.True(await events.MoveNextAsync());
            seen.Add(events.Current.Kind);
        }

        broadcaster.Publish(Event(9));
        broadcaster.Complete();
        while (await events.MoveNextAsync())
        {
            seen.Add(events.Current.Kind);
        }

        Assert.Equal([DomainEventKind.Started, DomainEventKind.Started, DomainEventKind.EventsLost, DomainEventKind.Started], seen);
        await events.DisposeAsync();
    }

    [Fact]
    public async Task Cancelling_ends_only_that_subscription()
    {
        var broadcaster = new DomainEventBroadcaster(TimeProvider.System);
        using var cancel = new CancellationTokenSource();
        var cancelled = broadcaster.Subscribe(cancel.Token).GetAsyncEnumerator(CancellationToken.None);
        var other = broadcaster.Subscribe(TestContext.Current.CancellationToken).GetAsyncEnumerator(TestContext.Current.CancellationToken);
        await cancel.CancelAsync();
        broadcaster.Publish(Event(1));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await cancelled.MoveNextAsync());
        Assert.True(await other.MoveNextAsync());
        Assert.Equal("d1", other.Current.DomainId);
        await other.DisposeAsync();
    }
}
