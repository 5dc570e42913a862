// After login: who am I (an authorised request), log out, unlink WeChat (DESIGN.md, step 13).

const LOGIN = '/pages/login/login';

function auth() {
  return getApp().auth;
}

Page({
  data: { me: null, error: '' },

  onShow() {
    return this.load();
  },

  async load() {
    try {
      // request() adds the access token and refreshes it once on 401.
      const response = await auth().request({ url: '/v1/me' });
      if (response.statusCode !== 200) throw new Error(`HTTP ${response.statusCode}`);
      this.setData({ me: response.data, error: '' });
    } catch (e) {
      if (e.needsLogin) return wx.reLaunch({ url: LOGIN });
      this.setData({ error: e.message });
    }
  },

  async onLogout() {
    await auth().logout();
    wx.reLaunch({ url: LOGIN });
  },

  async onUnbind() {
    try {
      await auth().unbind();
      wx.reLaunch({ url: LOGIN });
    } catch (e) {
      this.setData({ error: e.message });
    }
  },
});
