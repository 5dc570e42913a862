// The login page of the flow in DESIGN.md, steps 1–2, 5–6, 8 and 11–12, through the
// module's public functions only: login, submitProfile, submitPhone, bindWithPassword.
// Every handler returns its promise, so it can be awaited (and tested).

const HOME = '/pages/home/home';
// WeChat's grey default avatar, for users who do not pick one.
const DEFAULT_AVATAR =
  'https://mmbiz.qpic.cn/mmbiz/icTdbqWNOwNRna42FI242Lcia07jQodd2FJGIYQfG0LAJGFxM4FbnQP6yfMxBgJ0F3YRqJCJ1aPAK2dQagdusBZg/0';

function auth() {
  return getApp().auth;
}

Page({
  data: {
    // loading → profile → phone → done; password when the phone is declined or refused
    step: 'loading',
    avatarUrl: '',
    defaultAvatar: DEFAULT_AVATAR,
    error: '',
    busy: false,
  },

  onLoad() {
    return this.start();
  },

  // Returning users land on HOME after one request (or none, with a cached token).
  async start() {
    this.setData({ step: 'loading', error: '' });
    try {
      const session = await auth().login();
      if (session.bound) return this.enter();
      this.setData({ step: session.hasProfile ? 'phone' : 'profile' });
    } catch (e) {
      this.fail(e);
    }
  },

  onChooseAvatar(event) {
    this.setData({ avatarUrl: event.detail.avatarUrl });
  },

  // The form carries the nickname input (type="nickname"): its value is only final on submit.
  async onSubmitProfile(event) {
    const nickname = (event.detail.value.nickname || '').trim();
    if (!nickname) return this.setData({ error: 'Please enter a nickname.' });
    await this.busy(async () => {
      await auth().submitProfile({ nickname, avatarUrl: this.data.avatarUrl || DEFAULT_AVATAR });
      this.setData({ step: 'phone' });
    });
  },

  onSkipProfile() {
    this.setData({ step: 'phone', error: '' });
  },

  async onGetPhoneNumber(event) {
    await this.busy(async () => {
      try {
        await auth().submitPhone(event);
        return this.enter();
      } catch (e) {
        // Declined, or the business only lets known phones in: the account is the way.
        if (['phone_declined', 'phone_not_registered', 'registration_closed'].includes(e.code)) {
          this.setData({ step: 'password', error: e.code === 'phone_declined' ? '' : e.message });
          return;
        }
        throw e;
      }
    });
  },

  onUsePassword() {
    this.setData({ step: 'password', error: '' });
  },

  async onSubmitPassword(event) {
    const { account, password } = event.detail.value;
    if (!account || !password) return this.setData({ error: 'Enter your account and password.' });
    await this.busy(async () => {
      await auth().bindWithPassword(account.trim(), password);
      return this.enter();
    });
  },

  enter() {
    this.setData({ step: 'done', error: '' });
    wx.reLaunch({ url: HOME });
  },

  // One action at a time; a stale ticket starts over, any other error is shown.
  async busy(action) {
    if (this.data.busy) return;
    this.setData({ busy: true, error: '' });
    try {
      await action();
    } catch (e) {
      if (e.needsLogin) {
        this.setData({ busy: false });
        return this.start();
      }
      this.fail(e);
    }
    this.setData({ busy: false });
  },

  fail(e) {
    this.setData({ error: e.message || String(e) });
  },
});
